"""Provider webhooks: delivery status, inbound SMS and unsubscribe links (SPEC section 8).

Verified (Twilio signature, SendGrid signed Event Webhook, our own signed unsubscribe
tokens), normalised, and appended to the ledger idempotently.
"""
