"""docker-compose.yml gives each Airflow service the environment the integration test runs
with (deploy/local_cluster.py), so the deployment and what CI proves cannot drift."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT / "deploy"))
from local_cluster import ONE_HOST_ONLY, SERVICES, Cluster, shared_environment

# Settings only a real deployment has (a public URL for links and webhooks, and secrets the
# integration test does not need: it sends no email and signs in no auditor).
PRODUCTION_ONLY = {"CARE_PUBLIC_URL", "CARE_UNSUBSCRIBE_KEY", "CARE_AUDIT_TOKENS"}
# compose service -> the cluster's service (the same command).
COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _image_env() -> set[str]:
    """The variables the Dockerfile's ENV sets."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    keys: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            keys |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", line))
    return keys


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = dict(shared_environment()) if service.get("env_file") == "deploy/airflow.env" else {}
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    return env


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432"
    return Cluster(tmp_path, store_url=f"{pg}/care", airflow_db_url=f"{pg}/airflow")


def _cluster_env(cluster: Cluster, command: str) -> dict[str, str]:
    if command == "celery worker":
        return cluster.worker_environment(0)
    assert command in SERVICES
    return cluster.service_environment(command)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_compose_service_has_the_clusters_environment(cluster: Cluster, name: str) -> None:
    service = _compose()["services"][name]
    assert service["image"].startswith("caretouch:"), "built from the Dockerfile"
    assert service["command"] == COMMANDS[name]
    composed = _compose_env(service)
    ours = {k: v for k, v in _cluster_env(cluster, COMMANDS[name]).items()}
    wanted = set(ours) - ONE_HOST_ONLY
    have = set(composed) | _image_env()
    assert sorted(wanted - have) == [], "compose lacks what the integration test sets"
    assert sorted(set(composed) - wanted - PRODUCTION_ONLY) == [], "compose sets untested"
    for key in sorted(wanted & set(composed)):
        ours_value, theirs = ours[key], composed[key]
        if "://" in ours_value:  # hosts differ; the kind of server and driver must not
            assert urlsplit(theirs).scheme == urlsplit(ours_value).scheme, key
        elif key in shared_environment():
            assert theirs == ours_value, key


def test_the_image_installs_the_engine_and_nothing_is_installed_at_start() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert 'pip install --no-cache-dir "/opt/caretouch[celery]"' in dockerfile
    assert dockerfile.startswith("#") and "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in text
    for name in COMMANDS:
        volumes = _compose()["services"][name].get("volumes", [])
        assert not any(str(v).startswith(".:") for v in volumes), "no checkout mounted"


def test_docker_compose_config_validates() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker on this machine: `docker compose config` not run")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("docker has no compose plugin here: `docker compose config` not run")
    env = {
        **os.environ,
        "AIRFLOW_FERNET_KEY": "x" * 44,
        "AIRFLOW_JWT_SECRET": "jwt",
        "AIRFLOW_API_SECRET_KEY": "api",
        "CARE_ANCHOR_KEY": "anchor",
    }
    proc = subprocess.run(
        ["docker", "compose", "config", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
