"""Airflow DAG file: wiring only (the engine is in plugins/caretouch/)."""

from caretouch.airflow.digest import build_care_agent_digest

dag = build_care_agent_digest()
