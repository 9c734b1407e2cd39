"""Airflow plugin: serves the auditor's web view (``/care/audit``) and the provider webhooks
(``/care/hooks``) from Airflow's api-server.

Airflow does not authenticate plugin apps: the audit view authenticates auditors itself
(``caretouch.web.auth``: API tokens, and Airflow's JWT through ``caretouch.airflow.web_auth``,
passed in here), and every webhook proves its origin by its signature
(``caretouch.webhooks.verify``). Building the app does no I/O: the store,
``$CARE_AUDIT_TOKENS`` and the providers' credentials (the ``care_twilio`` / ``care_sendgrid``
Connections, read by the Airflow hooks in ``caretouch.airflow.hooks``, else the environment)
are read on first use.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from caretouch.airflow.web_auth import AirflowLogin
from caretouch.web import AuditAuth, create_care_app
from caretouch.web.webhook_context import WebhookSecrets


def _twilio() -> Any:
    from caretouch.airflow.hooks import twilio_credentials

    return twilio_credentials()


def _sendgrid() -> Any:
    from caretouch.airflow.hooks import sendgrid_credentials

    return sendgrid_credentials()


class CarePlugin(AirflowPlugin):
    name = "care"
    # A class attribute, as Airflow's plugin manager reads it.
    fastapi_apps = [  # noqa: RUF012
        {
            "app": create_care_app(
                auth=AuditAuth(host_login=AirflowLogin()),
                secrets=WebhookSecrets(twilio=_twilio, sendgrid=_sendgrid),
            ),
            "url_prefix": "/care",
            "name": "care",
        }
    ]
