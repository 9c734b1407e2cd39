"""Airflow DAG file: wiring only (the engine is in plugins/caretouch/)."""

from caretouch.airflow.reports import build_care_reports

dag = build_care_reports()
