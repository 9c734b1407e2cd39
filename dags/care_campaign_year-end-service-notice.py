"""Airflow DAG file for care_rules/campaigns/year-end-service-notice.yaml: wiring only (written by `care campaign dagfiles`)."""

from caretouch.airflow.campaigns import build_campaign_dag

dag = build_campaign_dag("year-end-service-notice")
