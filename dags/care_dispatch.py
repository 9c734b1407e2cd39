"""Airflow DAG file: wiring only (the engine is in plugins/caretouch/)."""

from caretouch.airflow.daily import build_care_dispatch

dag = build_care_dispatch()
