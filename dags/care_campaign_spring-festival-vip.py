"""Airflow DAG file for care_rules/campaigns/spring-festival-vip.yaml: wiring only (written by `care campaign dagfiles`)."""

from caretouch.airflow.campaigns import build_campaign_dag

dag = build_campaign_dag("spring-festival-vip")
