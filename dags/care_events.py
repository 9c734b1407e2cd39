"""Airflow DAG file: wiring only (the engine is in plugins/caretouch/)."""

from caretouch.airflow.events import build_care_events

dag = build_care_events()
