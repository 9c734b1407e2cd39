"""Caretouch's distributed deployment as real processes, without containers.

The same services as ``docker-compose.yml``: Airflow's ``api-server``, ``scheduler``,
``dag-processor`` and ``triggerer``, and Celery workers with Redis as the broker (and the event stream and the shared rate budgets, in the next two
dbs), PostgreSQL
holding Airflow's metadata (a database of its own) and the Caretouch store (another). Each
process gets the environment of ``Cluster.environment`` (workers: ``worker_environment``) and a
working directory of its own, as separate hosts would have. The multi-worker integration test
(tests/deploy/test_celery_cluster.py) runs it, and docs/deploy.md follows it as a recipe:

    python deploy/local_cluster.py up --dir /tmp/care-cluster --store-url URL \\
        --airflow-db-url URL --broker-db 11 --workers 2
    python deploy/local_cluster.py env --dir /tmp/care-cluster ...   # the variables, as shell
    python deploy/local_cluster.py down --dir /tmp/care-cluster

``up`` creates both PostgreSQL databases when missing, migrates Airflow's metadata, creates
the ``care_send`` pool and the Caretouch store (``care store init``), then starts the
services and waits for the api-server; ``down`` stops every process group it started.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
# The settings every service gets, here and in docker-compose.yml (its env_file).
SHARED_ENV = ROOT / "deploy" / "airflow.env"
# Variables that exist only because every service runs on one host: their own home, ports
# and PATH. Containers have these from their image and network.
ONE_HOST_ONLY = frozenset(
    {
        "AIRFLOW_HOME",
        "PATH",
        "AIRFLOW__API__HOST",
        "AIRFLOW__API__PORT",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
        "CARE_WORKER_NAME",
    }
)


def shared_environment() -> dict[str, str]:
    """``deploy/airflow.env`` as a mapping (``KEY=value`` lines; ``#`` starts a comment)."""
    found: dict[str, str] = {}
    for line in SHARED_ENV.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def libpq_url(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as psycopg itself takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def _server(url: str) -> Iterator[tuple[Any, str]]:
    """An autocommit connection to the server of ``url`` (its ``postgres`` database), and
    the name of ``url``'s own database."""
    import psycopg

    base, _, name = libpq_url(url).rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        yield conn, name


def create_database(url: str) -> None:
    """CREATE DATABASE for ``url``'s database unless it exists."""
    with _server(url) as (conn, name):
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    with _server(url) as (conn, name):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Cluster:
    """One deployment: where it lives, what it talks to, and the processes it runs."""

    base: Path
    store_url: str
    airflow_db_url: str
    redis: str = "redis://127.0.0.1:6379"
    broker_db: int = 11
    workers: int = 2
    api_port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        state = self.base / "cluster.json"
        if state.exists():  # the same secrets and port for every command on this directory
            saved = json.loads(state.read_text(encoding="utf-8"))
            self.secrets = self.secrets or saved["secrets"]
            self.api_port = self.api_port or saved["api_port"]
        self.api_port = self.api_port or free_port()
        if not self.secrets:
            self.secrets = {
                "fernet": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                "jwt": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                "api": base64.urlsafe_b64encode(os.urandom(16)).decode(),
                "anchor": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            }
        self.base.mkdir(parents=True, exist_ok=True)
        state.write_text(
            json.dumps({"secrets": self.secrets, "api_port": self.api_port}), encoding="utf-8"
        )
        state.chmod(0o600)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def environment(self) -> dict[str, str]:
        """What every service gets (Airflow's settings, then Caretouch's)."""
        airflow_db = self.airflow_db_url
        return {
            **shared_environment(),
            "AIRFLOW_HOME": str(self.base / "airflow-home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["fernet"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": f"{self.redis}/{self.broker_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__SECRET_KEY": self.secrets["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["jwt"],
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "CARE_STORE_URL": self.store_url,
            "CARE_RULES_DIR": str(ROOT / "care_rules"),
            "CARE_TEMPLATES_DIR": str(ROOT / "templates"),
            "CARE_ANCHOR_KEY": self.secrets["anchor"],
            "CARE_REDIS_URL": f"{self.redis}/{self.broker_db + 1}",
            # One rate budget per provider account, whichever worker sends.
            "CARE_RATE_LIMIT_URL": f"{self.redis}/{self.broker_db + 2}",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **self.extra_env,
        }

    def workdir(self, name: str) -> Path:
        """A service's working directory, with its local outbox, anchors and reports."""
        path = self.base / "hosts" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def service_environment(self, name: str) -> dict[str, str]:
        """A service's environment: the outbox, the anchors and the reports on storage every
        service shares (``shared/`` stands for it here, as a volume shared by the containers
        of one Docker host does in docker-compose.yml: hence ``CARE_OUTBOX_SHARED``; on
        several hosts they are URLs, docs/deploy.md)."""
        self.workdir(name)
        shared = self.base / "shared"
        return {
            **self.environment(),
            "CARE_OUTBOX_DIR": str(shared / "outbox"),
            "CARE_OUTBOX_SHARED": "true",
            "CARE_ANCHOR_FILE": str(shared / "anchors" / "ledger-anchors.jsonl"),
            "CARE_REPORTS_DIR": str(shared / "reports"),
        }

    def worker_environment(self, index: int) -> dict[str, str]:
        name = self.worker_name(index)
        return {
            **self.service_environment(name),
            "CARE_WORKER_NAME": name,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }

    @staticmethod
    def worker_name(index: int) -> str:
        return f"worker{index + 1}"

    # -- one-off steps ------------------------------------------------------------------

    def run(self, *argv: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
        """Run a command to its end in the cluster's environment; its output, or raise."""
        proc = subprocess.run(
            argv,
            env={**os.environ, **(env or self.service_environment("admin"))},
            cwd=self.workdir("admin"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                f"\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def airflow(self, *args: str, timeout: float = 300) -> str:
        return self.run(str(BIN / "airflow"), *args, timeout=timeout)

    def care(self, *args: str, timeout: float = 300) -> str:
        return self.run(str(BIN / "care"), *args, timeout=timeout)

    def prepare(self) -> None:
        """Databases, Airflow's schema, the send pool and the Caretouch store."""
        create_database(self.airflow_db_url)
        create_database(self.store_url)
        self.airflow("db", "migrate", timeout=600)
        slots = self.environment()["CARE_SEND_POOL_SLOTS"]
        self.airflow("pools", "set", "care_send", slots, "Caretouch provider sends")
        self.care("store", "init")

    # -- the services ---------------------------------------------------------------------

    def start(self) -> None:
        for name in SERVICES:
            self._spawn(name, [str(BIN / "airflow"), name], self.service_environment(name))
        for i in range(self.workers):
            self.start_worker(i)
        self.wait_for_api()

    def start_worker(self, index: int) -> None:
        name = self.worker_name(index)
        argv = [
            str(BIN / "airflow"),
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
        ]
        self._spawn(name, argv, self.worker_environment(index))

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        logs = self.base / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = (logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=self.workdir(name),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped (or killed) as a whole
        )
        pids = self.base / "pids.json"
        known = json.loads(pids.read_text()) if pids.exists() else {}
        known[name] = self.processes[name].pid
        pids.write_text(json.dumps(known))

    def wait_for_api(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"the api-server did not answer on {self.api_url} in {timeout} s")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a service and every process under it, as a host that dies: a
        Celery worker's task processes run in sessions of their own, so its process group
        alone would leave them running."""
        pids = json.loads((self.base / "pids.json").read_text())
        _signal_tree(pids[name], sig)

    def stop(self, timeout: float = 30) -> None:
        pids_file = self.base / "pids.json"
        pids: dict[str, int] = json.loads(pids_file.read_text()) if pids_file.exists() else {}
        trees = {name: _tree(pid) for name, pid in pids.items()}
        for pid in pids.values():
            _signal_tree(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, pid in pids.items():
            proc = self.processes.get(name)
            while time.monotonic() < deadline and _alive(pid, proc):
                time.sleep(0.2)
            for member in trees[name] + _tree(pid):
                _signal(member, signal.SIGKILL)
            if proc is not None:
                proc.wait(5)
        pids_file.unlink(missing_ok=True)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process under it (children first re-parent when it dies: read the
    tree before signalling)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_tree(pid: int, sig: int) -> None:
    for member in _tree(pid):
        _signal(member, sig)


def _alive(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _cluster(args: Any) -> Cluster:
    return Cluster(
        Path(args.dir),
        store_url=args.store_url,
        airflow_db_url=args.airflow_db_url,
        broker_db=args.broker_db,
        workers=args.workers,
    )


def main(argv: list[str] | None = None) -> int:
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "env"])
    p.add_argument("--dir", required=True, help="where the cluster's files live")
    p.add_argument("--store-url", default=f"{pg}/care_cluster")
    p.add_argument("--airflow-db-url", default=f"{pg}/airflow_cluster")
    p.add_argument("--broker-db", type=int, default=11, help="Redis db of the Celery broker")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    cluster = _cluster(args)
    if args.command == "env":
        for key, value in sorted(cluster.environment().items()):
            print(f"export {key}={shlex.quote(value)}")
    elif args.command == "up":
        cluster.prepare()
        cluster.start()
        print(f"up: api-server {cluster.api_url}, logs in {cluster.base / 'logs'}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
