"""The web app served under ``/care``: the auditor's view of the touch ledger (``/audit``) and
the routes of the provider webhooks (``/hooks``). Mounted by the Airflow plugin or served by
``care serve``.

Needs FastAPI and Jinja2; never imports Airflow (the plugin injects Airflow's login).
"""

from .app import create_audit_app, create_care_app, create_standalone_app
from .auth import AuditAuth, Auditor, AuditTokens, HostLogin

__all__ = [
    "AuditAuth",
    "AuditTokens",
    "Auditor",
    "HostLogin",
    "create_audit_app",
    "create_care_app",
    "create_standalone_app",
]
