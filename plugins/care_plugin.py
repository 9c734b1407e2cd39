"""Airflow plugin: serves the auditor's web view of the touch ledger under ``/care/audit``.

Airflow does not authenticate plugin apps; the app does it itself (``caretouch.web.app``).
Building the app does no I/O: the store and ``$CARE_AUDIT_TOKENS`` are read on first use.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from caretouch.web.app import create_audit_app


class CarePlugin(AirflowPlugin):
    name = "care"
    # A class attribute, as Airflow's plugin manager reads it.
    fastapi_apps = [{"app": create_audit_app(), "url_prefix": "/care", "name": "care"}]  # noqa: RUF012
