"""``care serve``: the webhooks and the auditor's view without Airflow (small installs).

The same app the Airflow plugin mounts (``caretouch.web.app.create_care_app``), mounted at
``/care`` so every URL is the same as under Airflow's api-server: ``/care/hooks/...`` for
the providers, ``/care/audit`` for auditors. Credentials come from the environment.
"""

from __future__ import annotations

import click

from .common import config_of, friendly_errors


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8790, show_default=True, type=int, help="Port to listen on.")
@click.option("--access-log", is_flag=True, help="Log every request (paths carry link tokens).")
@click.pass_context
@friendly_errors
def serve(ctx: click.Context, host: str, port: int, access_log: bool) -> None:
    """Serve /care/hooks (Twilio, SendGrid, unsubscribe links) and /care/audit."""
    import uvicorn

    from ..channels.credentials import sendgrid_from_env, twilio_from_env
    from ..schema import require_current_schema
    from ..store.db import open_store
    from ..web.app import create_standalone_app

    config = config_of(ctx)
    store = open_store(config.store_url)
    try:
        require_current_schema(store)  # fail now, plainly, rather than on the first webhook
    finally:
        store.dispose()
    twilio = twilio_from_env(config)
    sendgrid = sendgrid_from_env(config)
    public = config.public_url
    click.echo(f"store: {store.masked_url()}", err=True)
    click.echo(
        "webhooks: Twilio "
        + ("on" if twilio else "off (no TWILIO_* credentials)")
        + ", SendGrid events "
        + ("on" if sendgrid and sendgrid.webhook_public_key else "off (no verification key)")
        + ", unsubscribe links "
        + ("on" if config.unsubscribe_key else "off (no CARE_UNSUBSCRIBE_KEY)"),
        err=True,
    )
    if not public:
        click.echo(
            "warning: CARE_PUBLIC_URL is not set: Twilio signatures are checked against the "
            "URL requests arrive at, which a proxy in front of this server changes",
            err=True,
        )
    app = create_standalone_app(store_url=config.store_url, anchor_file=config.anchor_file)
    click.echo(f"serving on http://{host}:{port}/care/hooks/ and /care/audit", err=True)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
