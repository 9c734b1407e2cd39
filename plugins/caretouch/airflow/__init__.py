"""The only part of the engine that imports Airflow: DAG factories for ``dags/``.

Tasks call the same engine functions as the CLI (``caretouch.run``); nothing is implemented
twice. Configuration comes from the environment of the worker (``CARE_STORE_URL``,
``CARE_RULES_DIR``, ``CARE_TEMPLATES_DIR``, ``CARE_OUTBOX_DIR``).
"""
