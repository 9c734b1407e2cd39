"""Every setting of the engine, typed, in one place: ``CareConfig``.

Each field is one environment variable (``CARE_*``, and the providers' ``TWILIO_*`` and
``SENDGRID_*``), with its default and description; docs/deploy.md's table lists them all
(tests/test_config.py keeps the two the same). ``CareConfig.from_env(**overrides)`` is the one
way the engine reads them: CLI options override the environment, the environment overrides
the defaults. Every variable is checked when the configuration is built, and each bad one is
named in one line of the ``ConfigurationError`` raised (``CARE_SEND_POOL_SLOTS: must be an
integer ≥ 1, got 'x'``). Secrets are ``SecretStr``: they never show in a repr or a log line.

Nothing here imports the rest of the engine: whoever opens the store, the channels or the
event stream takes what it needs from a ``CareConfig``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigurationError

DEFAULT_STORE_URL = "sqlite:///care.db"
TWILIO_API_BASE = "https://api.twilio.com"
SENDGRID_API_BASE = "https://api.sendgrid.com"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "care:events"
DEFAULT_GROUP = "caretouch"
# Storage URLs of the ``limits`` library that are one Redis (channels.shared_limits).
RATE_LIMIT_SCHEMES = ("redis", "rediss", r"redis\+unix", r"redis\+sentinel", r"redis\+cluster")

# CLI options of ``from_env`` and the fields they set; an error names the option it came from.
OPTIONS = {
    "store": ("store_url", "--store"),
    "rules": ("rules_dir", "--rules"),
    "templates": ("templates_dir", "--templates"),
    "outbox": ("outbox_dir", "--outbox"),
    "anchors": ("anchor_file", "--anchors"),
}


# -- checks of one value -------------------------------------------------------------------


def _url(*schemes: str) -> AfterValidator:
    pattern = re.compile(rf"(?:{'|'.join(schemes)})://\S*", re.IGNORECASE)

    def check(value: str | None) -> str | None:
        if value is not None and not pattern.fullmatch(value):
            raise ValueError("")
        return value

    return AfterValidator(check)


def _database_url(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", value):
        raise ValueError("")
    return value


def _folder(value: Path | None) -> Path | None:
    if value is not None and value.exists() and not value.is_dir():
        raise ValueError("it is a file")
    return value


def _file(value: Path) -> Path:
    if value.is_dir():
        raise ValueError("it is a folder")
    return value


def is_local_url(value: str) -> bool:
    """Whether a storage URL (``storage.Location``) is on this machine's disk: a plain path
    or a ``file://`` URL. Anything else (``s3://``, ...) is shared by every worker."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", value)
    return match is None or match.group(1).lower() == "file"


def _as_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, PurePath) else value


def _storage_folder(value: str) -> str:
    if is_local_url(value):
        _folder(Path(value.removeprefix("file://")))
    elif not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", value):
        raise ValueError("")
    return value


def _anchor_place(value: str) -> str:
    if is_local_url(value):
        path = Path(value.removeprefix("file://"))
        if value.endswith(".jsonl"):
            _file(path)
        else:
            _folder(path)
    elif value.endswith(".jsonl"):
        raise ValueError("object storage cannot append to a file: give a folder URL")
    elif not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", value):
        raise ValueError("")
    return value


def _json_object(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        try:
            parsed = json.loads(value.get_secret_value())
        except json.JSONDecodeError:
            raise ValueError("not JSON") from None
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
    return value


HttpUrl = Annotated[str, _url("https?")]
Folder = Annotated[Path, AfterValidator(_folder)]
StorageFolder = Annotated[str, BeforeValidator(_as_text), AfterValidator(_storage_folder)]
AnchorPlace = Annotated[str, BeforeValidator(_as_text), AfterValidator(_anchor_place)]


def _field(variable: str, default: Any, expect: str | None, description: str) -> Any:
    """One setting: its environment variable, default, what a valid value is (for errors) and
    what it does: the description is Markdown, the "what it does" cell of docs/deploy.md's
    table of environment variables, word for word (links are relative to docs/)."""
    extra: dict[str, Any] | None = {"expect": expect} if expect else None
    return Field(
        default, validation_alias=variable, description=description, json_schema_extra=extra
    )


class CareConfig(BaseSettings):
    """Where things are (the store, rules, templates, outbox, reports, anchors) and every
    other setting: providers, the event stream, the send pool, secrets.

    ``CareConfig(store_url, rules_dir, templates_dir, outbox_dir, anchor_file, reports_dir)``
    takes those given (positionally or by name) and reads every other field from the
    environment; ``from_env`` is the same with the CLI's option names.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,  # an empty variable is an unset one, as it always was
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    # -- where things are
    store_url: Annotated[str, AfterValidator(_database_url)] = _field(
        "CARE_STORE_URL",
        DEFAULT_STORE_URL,
        "a database URL such as sqlite:///care.db or postgresql://user@host/care",
        "the store and ledger database ([store.md](store.md#connecting)); `--store` wins",
    )
    rules_dir: Folder = _field(
        "CARE_RULES_DIR",
        Path("care_rules"),
        "a rules directory",
        "rule files, `policy.yaml`, `events.yaml`, `campaigns/`; `--rules` wins",
    )
    templates_dir: Folder = _field(
        "CARE_TEMPLATES_DIR",
        Path("templates"),
        "a templates directory",
        "the message templates; `--templates` wins",
    )
    outbox_dir: StorageFolder = _field(
        "CARE_OUTBOX_DIR",
        "outbox",
        "an outbox folder or a folder URL such as s3://bucket/care/outbox",
        "where the `outbox` channel writes messages: a folder, or a URL every worker shares "
        "(crash recovery looks there); `--outbox` wins",
    )
    outbox_shared: bool = _field(
        "CARE_OUTBOX_SHARED",
        False,
        None,
        "`true`: the operator asserts that the local outbox folder is on storage every worker "
        "shares; **required to use a local outbox with several workers** (CeleryExecutor, or "
        "`CARE_WORKERS` > 1), not with a URL ([outbox](#the-outbox-with-several-workers))",
    )
    workers: int = _field(
        "CARE_WORKERS",
        1,
        "an integer ≥ 1",
        "how many workers run tasks; under Airflow, an executor that runs tasks on several "
        "machines (Celery, Kubernetes, Edge) counts as several",
    )
    anchor_file: AnchorPlace = _field(
        "CARE_ANCHOR_FILE",
        "ledger-anchors.jsonl",
        "a local .jsonl file, or a folder URL such as s3://bucket/care",
        "where every run anchors the ledger's chain head ([audit.md](audit.md#anchors)): a "
        "local `.jsonl` file appended to, or a folder (URL) holding one object per anchor "
        "(`anchors/…`), e.g. `s3://bucket/care` ([storage](#shared-storage-anchors-run-"
        "summaries-reports)); one place for all workers; `--anchors` wins",
    )
    reports_dir: StorageFolder = _field(
        "CARE_REPORTS_DIR",
        "reports",
        "a reports folder or a folder URL such as s3://bucket/care/reports",
        "run summaries (`runs/<date>/<run id>.json`) and the reports of `care report` and "
        "`care_reports`: a folder or a URL ([storage](#shared-storage-anchors-run-summaries-"
        "reports))",
    )
    storage_options_json: Annotated[SecretStr | None, AfterValidator(_json_object)] = _field(
        "CARE_STORAGE_OPTIONS",
        None,
        'a JSON object such as {"endpoint_url": "https://s3.example.com"}',
        "fsspec storage options for the anchor and reports URLs (e.g. s3fs's `endpoint_url`, "
        "`client_kwargs`); credentials are better left to the standard `AWS_*` variables or "
        "an instance role",
    )
    anchor_retention_days: int = _field(
        "CARE_ANCHOR_RETENTION_DAYS",
        2557,
        "an integer ≥ 0",
        "on `s3://`, each anchor object is written with S3 Object Lock retention for that "
        "many days (default about 7 years); 0: none requested (the bucket's default "
        "retention applies)",
    )
    anchor_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = _field(
        "CARE_ANCHOR_LOCK_MODE",
        "COMPLIANCE",
        None,
        "the S3 Object Lock mode of the anchor objects: `COMPLIANCE` (nobody can delete "
        "them before the date) or `GOVERNANCE` (users granted `s3:BypassGovernanceRetention` "
        "can)",
    )
    dags_dir: Folder | None = _field(
        "CARE_DAGS_DIR",
        None,
        "a DAG folder",
        "where `care_daily.py` is, for the demo's Airflow run",
    )

    # -- secrets
    anchor_key: SecretStr | None = _field(
        "CARE_ANCHOR_KEY",
        None,
        None,
        "the secret that signs the anchors (HMAC); not in the database. **Required when "
        "`CARE_ANCHOR_FILE` is not local** (`s3://…`); with a local anchor file "
        "(development), unset: anchors are unsigned and every run, `care audit verify` and "
        "the verify page warn ([audit.md](audit.md#the-anchor-key))",
    )
    unsubscribe_key: SecretStr | None = _field(
        "CARE_UNSUBSCRIBE_KEY",
        None,
        None,
        "secret (≥ 16 characters) signing unsubscribe links; **required to send with "
        "SendGrid**; the same value everywhere",
    )
    audit_tokens: SecretStr | None = _field(
        "CARE_AUDIT_TOKENS",
        None,
        None,
        "comma-separated `name:token` pairs that may read the audit view "
        "([audit-web.md](audit-web.md#signing-in)); unset under Airflow, only Airflow "
        "sign-ins are accepted",
    )

    # -- providers
    public_url: HttpUrl | None = _field(
        "CARE_PUBLIC_URL",
        None,
        "an http(s) URL such as https://care.example.com",
        "where providers and customers reach `/care/hooks/…`: Twilio status callbacks, "
        "unsubscribe links (**required to send with SendGrid**), the URL Twilio's signatures "
        "are checked against ([webhooks.md](webhooks.md#configuration))",
    )
    twilio_account_sid: SecretStr | None = _field(
        "TWILIO_ACCOUNT_SID",
        None,
        None,
        "the Twilio account; with `TWILIO_AUTH_TOKEN` and `CARE_SMS_FROM`, all three or none "
        "([channels.md](channels.md#configuring-the-accounts))",
    )
    twilio_auth_token: SecretStr | None = _field(
        "TWILIO_AUTH_TOKEN", None, None, "the Twilio account's auth token"
    )
    sms_from: str | None = _field(
        "CARE_SMS_FROM",
        None,
        None,
        "the Twilio sender: an E.164 number or a Messaging Service SID (`MG…`)",
    )
    sms_rate: float | None = _field(
        "CARE_SMS_RATE",
        None,
        "a number > 0",
        "messages per second the Twilio account allows",
    )
    sms_concurrency: int | None = _field(
        "CARE_SMS_CONCURRENCY",
        None,
        "an integer ≥ 1",
        "Twilio requests in flight at once",
    )
    twilio_api_base: HttpUrl = _field(
        "CARE_TWILIO_API_BASE",
        TWILIO_API_BASE,
        "an http(s) URL",
        "another Twilio API base (a proxy, a test double)",
    )
    sendgrid_api_key: SecretStr | None = _field(
        "SENDGRID_API_KEY",
        None,
        None,
        "the SendGrid API key; with `CARE_EMAIL_FROM`, both or none",
    )
    email_from: str | None = _field("CARE_EMAIL_FROM", None, None, "the SendGrid sender address")
    email_rate: float | None = _field(
        "CARE_EMAIL_RATE",
        None,
        "a number > 0",
        "messages per second the SendGrid account allows",
    )
    email_concurrency: int | None = _field(
        "CARE_EMAIL_CONCURRENCY",
        None,
        "an integer ≥ 1",
        "SendGrid requests in flight at once",
    )
    sendgrid_api_base: HttpUrl = _field(
        "CARE_SENDGRID_API_BASE",
        SENDGRID_API_BASE,
        "an http(s) URL",
        "another SendGrid API base",
    )
    sendgrid_webhook_public_key: str | None = _field(
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        None,
        None,
        "the Event Webhook's verification key; without it every SendGrid post is refused (503)",
    )
    send_pool_slots: int = _field(
        "CARE_SEND_POOL_SLOTS",
        4,
        "an integer ≥ 1",
        "the slots of the `care_send` pool; without `CARE_RATE_LIMIT_URL`, each send task "
        "takes that share of each provider's rate ([below](#providers-and-the-send-pool))",
    )
    rate_limit_url: Annotated[str | None, _url(*RATE_LIMIT_SCHEMES)] = _field(
        "CARE_RATE_LIMIT_URL",
        None,
        "a Redis URL such as redis://host:6379/0 (redis://, rediss://, redis+unix://, "
        "redis+sentinel:// or redis+cluster://)",
        "the Redis holding each provider account's one rate budget, shared by every process "
        "that sends ([below](#one-rate-limit-per-provider-account)); **required with more "
        "than one sender** (pool slots, workers, hosts, `care dispatch` beside Airflow). "
        "Unset: each process keeps a token bucket of its own (one sender on one host)",
    )
    worker_name: str | None = _field(
        "CARE_WORKER_NAME",
        None,
        None,
        "this Airflow worker's name in task instances (`caretouch.airflow.hosts.worker_hostname`), "
        "for several workers on one host",
    )
    plan_shards: int = _field(
        "CARE_PLAN_SHARDS",
        1,
        "an integer ≥ 1",
        "planners that share each `care_daily` day, each a share of the customers and of "
        "each channel's capacity ([below](#sharded-planning))",
    )

    # -- events and reports
    redis_url: Annotated[str, _url("redis", "rediss", "unix")] = _field(
        "CARE_REDIS_URL",
        DEFAULT_REDIS_URL,
        "a Redis URL such as redis://host:6379/0 (redis://, rediss:// or unix://)",
        "the Redis holding the event stream "
        "([events.md](events.md#redis-stream-recommended-for-a-core-system))",
    )
    event_stream: str = _field("CARE_EVENT_STREAM", DEFAULT_STREAM, None, "the stream's key")
    event_group: str = _field(
        "CARE_EVENT_GROUP", DEFAULT_GROUP, None, "the consumer group reading it"
    )
    report_email_to: Annotated[tuple[str, ...], NoDecode] = _field(
        "CARE_REPORT_EMAIL_TO",
        (),
        None,
        "comma-separated staff addresses the reports are emailed to "
        "([operations.md](operations.md#the-monthly-and-weekly-reports))",
    )
    escalate_after_days: int = _field(
        "CARE_ESCALATE_AFTER_DAYS",
        3,
        "an integer ≥ 1",
        "days overdue after which an agent's open task goes to their manager's daily digest "
        "([operations.md](operations.md#the-daily-digest-and-escalation))",
    )
    reply_window_days: int = _field(
        "CARE_REPLY_WINDOW_DAYS",
        7,
        "an integer ≥ 1",
        "a customer's reply (an inbound SMS, an inbound email) answers the latest touch sent "
        "to them on that channel and address within that many days; a score with no such "
        "touch goes to their agent as a message ([webhooks.md](webhooks.md#customers-replies))",
    )
    inbound_email_token: SecretStr | None = _field(
        "CARE_INBOUND_EMAIL_TOKEN",
        None,
        None,
        "secret (≥ 16 characters) in the path of the URL SendGrid's Inbound Parse posts "
        "customers' emails to (`/care/hooks/sendgrid/inbound/<token>`); unset (or shorter), "
        "that route answers 404 ([webhooks.md](webhooks.md#customers-replies))",
    )

    @field_validator("sms_rate", "email_rate", mode="after")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and not (0 < value < float("inf")):
            raise ValueError("")
        return value

    @field_validator("anchor_retention_days", mode="after")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("")
        return value

    @field_validator(
        "sms_concurrency",
        "email_concurrency",
        "send_pool_slots",
        "workers",
        "plan_shards",
        "escalate_after_days",
        "reply_window_days",
        mode="after",
    )
    @classmethod
    def _at_least_one(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("")
        return value

    @field_validator("report_email_to", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(a.strip() for a in value.split(",") if a.strip())
        return value

    def __init__(
        self,
        store_url: str | None = None,
        rules_dir: str | Path | None = None,
        templates_dir: str | Path | None = None,
        outbox_dir: str | Path | None = None,
        anchor_file: str | Path | None = None,
        reports_dir: str | Path | None = None,
        *,
        _given_as: dict[str, str] | None = None,
        **values: Any,
    ) -> None:
        given = {
            "store_url": store_url,
            "rules_dir": rules_dir,
            "templates_dir": templates_dir,
            "outbox_dir": outbox_dir,
            "anchor_file": anchor_file,
            "reports_dir": reports_dir,
        }
        values.update({k: v for k, v in given.items() if v is not None and v != ""})
        unknown = set(values) - set(type(self).model_fields) - set(type(self).variables())
        if unknown:
            raise TypeError(f"{type(self).__name__}: no setting {', '.join(sorted(unknown))}")
        try:
            super().__init__(**values)
        except ValidationError as exc:
            names = {name: name for name in values}
            names.update(_given_as or {})
            raise ConfigurationError(
                "\n".join(_problem(type(self), error, names) for error in exc.errors())
            ) from None
        if not is_local_url(self.anchor_file) and self.anchor_key is None:
            # Outside development (a local anchor file), an unsigned anchor is one anyone
            # with write access to the bucket can forge: refuse to start.
            label = (_given_as or {}).get("anchor_file", "CARE_ANCHOR_FILE")
            raise ConfigurationError(
                f"CARE_ANCHOR_KEY: required when the anchors are kept at {self.anchor_file} "
                f"({label}): without it they are not signed and can be forged. Set it to a "
                "secret kept outside the database (docs/audit.md#the-anchor-key)"
            )

    @classmethod
    def from_env(
        cls,
        *,
        store: str | None = None,
        rules: str | Path | None = None,
        templates: str | Path | None = None,
        outbox: str | Path | None = None,
        anchors: str | Path | None = None,
    ) -> CareConfig:
        """The configuration: each option given wins over its environment variable, which
        wins over the default. Raises ``ConfigurationError`` naming every bad variable."""
        given = {"store": store, "rules": rules, "templates": templates}
        given.update({"outbox": outbox, "anchors": anchors})
        values: dict[str, Any] = {
            OPTIONS[k][0]: v for k, v in given.items() if v is not None and v != ""
        }
        labels = {OPTIONS[k][0]: OPTIONS[k][1] for k, v in given.items() if v}
        return cls(**values, _given_as=labels)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Environment variable -> field name, for every setting."""
        return {str(f.validation_alias): name for name, f in cls.model_fields.items()}

    def __repr_args__(self) -> Any:
        # A URL's password (postgresql://care:secret@db/care) is a secret too.
        for name, value in super().__repr_args__():
            if name in ("store_url", "redis_url", "rate_limit_url") and isinstance(value, str):
                value = without_password(value)
            yield name, value

    def storage_options(self) -> dict[str, Any]:
        """The fsspec storage options of ``$CARE_STORAGE_OPTIONS`` (``{}`` when unset)."""
        if self.storage_options_json is None:
            return {}
        return dict(json.loads(self.storage_options_json.get_secret_value()))

    def is_set(self, name: str) -> bool:
        """Whether field ``name`` was given (by an option or the environment), not defaulted."""
        return name in self.model_fields_set

    def check_destinations(self, *, outbox: bool = False) -> None:
        """Before a run's work: the places it writes at the end (run summaries, ledger
        anchors and, with ``outbox``, message files) can be written; missing folders are
        created. Raises ``ConfigurationError`` naming the place and its setting."""
        # Remote places (s3://...) are checked by ``storage.Location.problem`` at the start
        # of a run (``run.engine.check_destinations``); this module stays free of fsspec.
        places: list[tuple[Path, bool, str]] = []
        if is_local_url(self.reports_dir):
            path = Path(self.reports_dir.removeprefix("file://"))
            places.append((path / "runs", True, "reports folder (CARE_REPORTS_DIR)"))
        if is_local_url(self.anchor_file):
            path = Path(self.anchor_file.removeprefix("file://"))
            places.append(
                (
                    path,
                    not self.anchor_file.endswith(".jsonl"),
                    "anchors (--anchors, CARE_ANCHOR_FILE)",
                )
            )
        if outbox and is_local_url(self.outbox_dir):
            path = Path(self.outbox_dir.removeprefix("file://"))
            places.append((path, True, "outbox folder (--outbox, CARE_OUTBOX_DIR)"))
        for path, folder, what in places:
            problem = unwritable(path, folder=folder)
            if problem:
                raise ConfigurationError(f"{what}: {problem}")


_GENERIC = {
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "bool_parsing": "true or false (also 1/0, yes/no, on/off)",
}


def _problem(settings: type[CareConfig], error: Any, given: dict[str, str]) -> str:
    """One line for one bad value: the variable (or option), what was expected, what came."""
    name = str(error["loc"][0]) if error["loc"] else ""
    fields = settings.model_fields
    field_name = name if name in fields else settings.variables().get(name, name)
    field = fields.get(field_name)
    variable = str(field.validation_alias) if field else name
    label = given.get(field_name, variable) if field_name in given else variable
    if label != variable and field is not None:
        label = f"{label} ({variable})"
    extra = field.json_schema_extra if field is not None else None
    expect = extra.get("expect") if isinstance(extra, dict) else None
    ctx = error.get("ctx") or {}
    if error["type"] in ("literal_error", "enum"):
        expect = f"one of {ctx.get('expected')}"
    expect = expect or _GENERIC.get(error["type"]) or str(error["msg"]).lower()
    secret = field is not None and "SecretStr" in repr(field.annotation)
    given_value = error.get("input")
    if isinstance(given_value, PurePath):
        given_value = str(given_value)
    shown = "a value not shown (a secret)" if secret else repr(given_value)
    detail = str(ctx.get("error") or "") if error["type"] == "value_error" else ""
    return f"{label}: must be {expect}, got {shown}" + (f" ({detail})" if detail else "")


def without_password(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://:***@host:6379/0``: a URL fit for a log
    line or an error (a URL's password is a secret too)."""
    found = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@(.*)", url, re.DOTALL)
    if found is None:
        return url
    scheme, userinfo, rest = found.groups()
    user = userinfo.split(":", 1)[0] + ":" if ":" in userinfo else ""
    return f"{scheme}{user}***@{rest}"


def unwritable(path: Path, *, folder: bool = False, create: bool = True) -> str | None:
    """Why ``path`` (a file, or with ``folder`` a folder) cannot be written, or None.

    Missing folders on the way are created unless ``create`` is false. The check really
    writes (a temporary file, removed at once), so permissions, read-only file systems and
    full disks are caught as they would be at the end of a long computation."""
    where = path if folder else path.parent
    if folder and path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    if not folder and path.is_dir():
        return f"{path} is a folder, not a file"
    if not where.is_dir():
        if not create:
            return f"folder {where} does not exist"
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create folder {where}: {exc.strerror or exc}"
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        return f"cannot write in {where}: {exc.strerror or exc}"
    if not folder and path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None
