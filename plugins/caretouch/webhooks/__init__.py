"""Provider webhooks: delivery status, inbound SMS and unsubscribe links (SPEC section 8).

Verified (``verify``: Twilio signature, SendGrid signed Event Webhook, our own signed
unsubscribe tokens), normalised, and appended to the ledger idempotently (``recording``), one
module per sender: ``twilio``, ``sendgrid``, ``unsubscribe``. No HTTP here: the routes are
``caretouch.web.webhook_routes``.

"Webhook" here means a provider calling us back. Not to be confused with Airflow *hooks*
(``caretouch.airflow.hooks``: credentials from Airflow Connections).
"""
