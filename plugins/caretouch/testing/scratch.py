"""A test's world: a scratch store with the test's rows, consents and ledger history.

Every test gets a store of its own: a SQLite file in a temporary folder, copied from one
migrated once per run (migrating takes longer than the test), deleted afterwards. Nothing the
user has is read or written.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..errors import ValidationError
from ..ledger import Ledger
from ..ledger.consent import record_consent
from ..plan import plan_day
from ..plan.planner import local_send_at
from ..plan.touch import Touch
from ..rules.loader import RuleSet
from ..rules.model import Rule
from ..run.records import planned_touches
from ..schema.migrate import upgrade
from ..store.consent import Purpose
from ..store.db import Store, open_store
from ..store.importer import ID_COLUMN, MODELS, PARSERS, REFERENCES, TABLES, RowError
from ..store.write import upsert
from ..vocab import Channel, Decision, SubjectKind, SuppressionReason, TouchStatus
from .fixtures import Case, HistoryEntry

# The tables whose rows a test's history names, by the subject of a rule's trigger.
_SUBJECT_TABLE = {
    SubjectKind.POLICY: "policy",
    SubjectKind.EVENT: "event",
    SubjectKind.RELATION: "relation",
}
# Where a history entry's status takes the touch, step by step from ``planned``.
_STEPS: dict[str, tuple[TouchStatus, ...]] = {
    "sent": (TouchStatus.SENT,),
    "delivered": (TouchStatus.SENT, TouchStatus.DELIVERED),
    "done": (TouchStatus.ASSIGNED, TouchStatus.DONE),
    "suppressed": (),
    "deferred": (),
}
HISTORY_RUN = "care-test:history"


class ScratchStores:
    """Stores for tests, each a copy of one migrated empty store."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="care-test-"))
        self._template: Path | None = None
        self._count = 0

    def _migrated(self) -> Path:
        if self._template is None:
            path = self._folder / "template.db"
            store = open_store(f"sqlite:///{path}")
            try:
                upgrade(store)
            finally:
                # The last connection closed checkpoints the WAL into the file: one file to copy.
                store.dispose()
            self._template = path
        return self._template

    @contextmanager
    def store(self) -> Iterator[tuple[Store, Path]]:
        """A fresh migrated store, and a folder of its own (for the outbox)."""
        self._count += 1
        folder = self._folder / f"t{self._count}"
        folder.mkdir()
        shutil.copyfile(self._migrated(), folder / "care.db")
        store = open_store(f"sqlite:///{folder / 'care.db'}")
        try:
            yield store, folder
        finally:
            store.dispose()
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


def write_rows(store: Store, case: Case, ruleset: RuleSet) -> list[ValidationError]:
    """Write the test's rows as the importer would (its own parsers: derived keys, checks);
    every refused row is an error at its place in the fixture file, and nothing is
    written then."""
    errors: list[ValidationError] = []
    parsed: dict[str, list[dict[str, Any]]] = {}
    known: dict[str, set[str]] = {}
    for table in TABLES:  # each after the tables its rows name
        for where, cells in case.rows.get(table, []):
            try:
                row, _warnings = PARSERS[table](cells)
            except RowError as exc:
                errors.append(ValidationError(f"{table} row refused: {exc}", location=where))
                continue
            problem = _reference_problem(table, row, known)
            if table == "event" and problem is None:
                found = ruleset.event_types.problems(str(row["type"]), row.get("payload"))
                problem = "; ".join(found) if found else None
            if problem is not None:
                errors.append(ValidationError(f"{table} row refused: {problem}", location=where))
                continue
            parsed.setdefault(table, []).append(row)
            known.setdefault(table, set()).add(str(row[ID_COLUMN[table]]))
    if errors:
        return errors
    with store.session() as session:
        for table, rows in parsed.items():
            upsert(session, MODELS[table], ID_COLUMN[table], rows)
    return []


def _reference_problem(table: str, row: dict[str, Any], known: dict[str, set[str]]) -> str | None:
    """What a row names that the test does not hold (the importer's references)."""
    for column, other in REFERENCES[table]:
        value = row.get(column)
        if value and str(value) not in known.get(other, set()):
            return f"{column} {value!r} names no {other} of this test"
    return None


def withdraw_consents(store: Store, case: Case) -> list[ValidationError]:
    errors = []
    for w in case.consents:
        if w.customer not in case.customer_ids:
            errors.append(
                ValidationError(f"customer {w.customer!r} is not in this test", location=w.where)
            )
            continue
        record_consent(store, w.customer, {Purpose(w.purpose): False}, source="care test", at=w.at)
    return errors


def _rows_of(store: Store, table: str, customer_id: str) -> list[dict[str, Any]]:
    model = MODELS[table].__table__
    with store.read_session() as session:
        return [
            dict(r._mapping)
            for r in session.execute(select(model).where(model.c.customer_id == customer_id))
        ]


def _history_touch(store: Store, ruleset: RuleSet, entry: HistoryEntry) -> Touch:
    rule: Rule = ruleset.by_id(entry.rule)
    customers = [c for c in _rows_of(store, "customer", entry.customer)]
    if not customers:
        raise ValidationError(
            f"customer {entry.customer!r} is not in this test", location=entry.where
        )
    customer = customers[0]
    rows: dict[str, dict[str, Any] | None] = {"policy": None, "event": None, "relation": None}
    subject = rule.trigger.subject
    if subject in _SUBJECT_TABLE:
        table = _SUBJECT_TABLE[subject]
        candidates = _rows_of(store, table, entry.customer)
        if table == "event":
            candidates = [e for e in candidates if e["type"] == rule.trigger.event_type]
        if entry.subject is not None:
            candidates = [c for c in candidates if c[ID_COLUMN[table]] == entry.subject]
        if not candidates:
            raise ValidationError(
                f"rule {rule.id} is about a {table}: the test has no {table}"
                + (f" {entry.subject!r}" if entry.subject else "")
                + f" of customer {entry.customer} for this history entry (`subject:`)",
                location=entry.where,
            )
        rows[table] = candidates[0]
        if table == "event" and candidates[0].get("policy_id"):
            policies = _rows_of(store, "policy", entry.customer)
            rows["policy"] = next(
                (p for p in policies if p["policy_id"] == candidates[0]["policy_id"]), None
            )
    zone = ruleset.policy.zone(customer.get("timezone"))
    send_at = local_send_at(entry.day, rule.send_time, zone)
    channel = Channel(entry.channel) if entry.channel else rule.channels[0]
    touch = Touch(
        rule=rule,
        customer=customer,
        policy=rows["policy"],
        event=rows["event"],
        occurrence=entry.day,
        send_at=send_at,
        timezone=zone.key,
        channel=channel,
        relation=rows["relation"],
    )
    # Where the rule's trigger matched that day, the touch the planner made then: with the
    # facts it was planned with (a festival's name, the days before a due date, the years),
    # which a touch deferred from it keeps.
    planned = _planned_then(store, ruleset, rule, touch.key, entry.day)
    if planned is not None:
        planned.channel, planned.decision, planned.reason = channel, Decision.SEND, None
        planned.explain = []
        touch = planned
    if entry.context:
        touch.frozen_context = {**touch.template_context(), **entry.context}
    if entry.status == "suppressed":
        reason = SuppressionReason(entry.reason or SuppressionReason.FREQUENCY_CAP.value)
        touch.suppress(reason, "history of the test")
    elif entry.status == "deferred":
        touch.suppress(SuppressionReason.DEFERRED, "history of the test")
    return touch


def _planned_then(
    store: Store, ruleset: RuleSet, rule: Rule, key: str, day: dt.date
) -> Touch | None:
    """The touch of ``key`` as ``plan_day`` plans ``day`` for ``rule`` alone (no history:
    only its facts are wanted), or None when the trigger does not match that day."""
    alone = replace(ruleset, rules=[rule], campaigns=[])
    for touch in plan_day(store, alone, day):
        if touch.key == key:
            return touch
    return None


def write_history(
    store: Store, case: Case, ruleset: RuleSet
) -> tuple[set[str], list[ValidationError]]:
    """Record the test's history in the ledger as the engine would have: planned, then each
    status the entry names, at the touch's send time. Returns the keys written."""
    ledger = Ledger(store)
    keys: set[str] = set()
    errors: list[ValidationError] = []
    for entry in case.history:
        try:
            touch = _history_touch(store, ruleset, entry)
        except ValidationError as exc:
            errors.append(exc)
            continue
        at = touch.send_at
        record = ledger.record_plan(planned_touches([touch]), run_id=HISTORY_RUN, now=at)
        keys.add(touch.key)
        if touch.decision is not Decision.SEND:
            continue
        ids = record.planned_ids or []
        if len(ids) != 1:
            errors.append(
                ValidationError(
                    f"history entry {entry.rule} for {entry.customer} on {entry.day} is "
                    "given twice",
                    location=entry.where,
                )
            )
            continue
        touch_id = ids[0]
        steps = _STEPS[entry.status]
        if entry.status == "done" and touch.channel is not Channel.AGENT_TASK:
            errors.append(
                ValidationError(
                    "status done is a task's: give `channel: agent_task`", location=entry.where
                )
            )
            continue
        before = TouchStatus.PLANNED
        for status in steps:
            ledger.append(
                touch_id,
                status,
                expected=before,
                run_id=HISTORY_RUN,
                now=at,
                detail={"outcome": "reached"} if status is TouchStatus.DONE else None,
            )
            before = status
    return keys, errors
