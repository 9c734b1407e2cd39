"""The auditor's web view of the touch ledger (served by the Airflow plugin under ``/care``).

Needs FastAPI and Jinja2; never imports Airflow at import time (see ``app``).
"""

from .app import AuditAuth, Auditor, AuditTokens, create_audit_app

__all__ = ["AuditAuth", "AuditTokens", "Auditor", "create_audit_app"]
