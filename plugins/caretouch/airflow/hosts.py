"""Telling Airflow workers apart: ``[core] hostname_callable`` for several on one host.

Airflow records the host of every task instance with ``hostname_callable`` (default: the
machine's FQDN), so two Celery workers on one machine look like one. Point it here
(``AIRFLOW__CORE__HOSTNAME_CALLABLE=caretouch.airflow.hosts.worker_hostname``) and give each
worker its own ``CARE_WORKER_NAME``: task instances then name the worker that ran them.
"""

from __future__ import annotations

import socket

from ..config import CareConfig
from ..errors import ConfigurationError


def worker_hostname() -> str:
    """``CARE_WORKER_NAME`` when set, else the machine's FQDN (Airflow's default). Every
    Airflow process calls it, also those with no Caretouch configuration: a configuration
    that does not load (the task that needs it will say why) gives the FQDN."""
    try:
        name = CareConfig.from_env().worker_name
    except ConfigurationError:
        name = None
    return name or socket.getfqdn()
