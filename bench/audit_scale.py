"""How do the auditor's tools scale with the size of the ledger?

Builds (or reuses) a ledger of about ``--rows`` ledger rows (touches, attempts and status
events) spread over a year of daily runs, with the hash chain (``ledger_chain``) built in the
same pass by ``ledger.chain.row_hash`` / ``ledger.chain.link``, in the order ``chain.seal``
would have chained the rows: one seal per write transaction (the daily plan: touches and
their ``planned``/``suppressed`` events; each dispatch run: attempts and ``sending`` events,
then the providers' answers), and ``touch_current`` filled as ``Ledger.refresh_current``
would. ``audit.verify`` must accept the result, and ``touch_current`` must name every touch's
latest event, before anything is timed: that proves the bulk-built chain is the engine's
canonical form (the script exits 1 otherwise).

It then times ``audit.verify`` over the whole ledger, a full CSV export through
``audit.touches`` (with the resident memory sampled along the way and the peak RSS), and the
first page (50 touches) of the filtered searches an auditor's screen runs: by customer, by
rule and month, by rule over the whole year, by current status (``failed``, ``sent``, and
``planned``: the pending touches, which are the newest), and deep pages reached with the
``after=`` keyset; and an export of one rule over the year.
Every search's SQL is shown with ``EXPLAIN QUERY PLAN`` (SQLite) or ``EXPLAIN``
(PostgreSQL), marked ``index`` or ``FULL SCAN``. It prints figures and asserts nothing about
time.

    python bench/audit_scale.py [--rows 1000000] [--dir bench/.data] [--store-url URL]
        [--repeat 5] [--seed N] [--rebuild] [--keep]

The SQLite store is ``DIR/audit_scale_ROWS.db``, kept and reused while its build parameters
(recorded in a ``bench_audit_scale`` marker table) and the ledger schema match. With ``--store-url`` pointing at
PostgreSQL the ledger lives in a schema ``bench_audit_scale_ROWS``, dropped at the end unless
``--keep`` (it is then reused by the next run). The build runs in a child process, so that the
peak RSS reported for the export is the measuring process's own.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import hashlib
import heapq
import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from _common import (
    RULES_DIR,
    SEED,
    TEMPLATES_DIR,
    Explain,
    bulk_pragmas,
    note,
    read_marker,
    say,
    schema_differences,
)
from markupsafe import escape
from sqlalchemy import Column, MetaData, Table, Text, event, func, insert, select, text

from caretouch.dates import holidays_on
from caretouch.ledger import audit, chain
from caretouch.ledger.codec import encode
from caretouch.ledger.models import Attempt, LedgerBase, TouchCurrent, TouchEvent, TouchRow
from caretouch.render.templates import RenderedMessage, TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.rules.model import Rule, TriggerKind
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.store.population import Mix, Population, add_years
from caretouch.vocab import Channel, SubjectKind

GENERATOR_VERSION = 3  # bump when the generated ledger changes, to invalidate reused stores
LAST_DAY = dt.date(2026, 11, 23)  # "today": the newest daily run
DAYS = 365
FIRST_DAY = LAST_DAY - dt.timedelta(days=DAYS - 1)
# The end of the recorded history: dispatch runs later than this have not happened, so the
# touches they would send are still ``planned`` (the newest rows of the ledger).
NOW = dt.datetime.combine(LAST_DAY, dt.time(8, 30), dt.timezone.utc)
COMMIT_ROWS = 20_000  # ledger rows per insert transaction (their chain entries go with them)
DISPATCH_EVERY = 15  # minutes between two dispatch runs
PAGE_LIMIT = 50  # what one screen of the audit view shows
SLOW_BUDGET = 20.0  # seconds: a search that slow is timed twice, not --repeat times
SCHEMA_PREFIX = "bench_audit_scale_"
UTC = dt.timezone.utc

MARKER = Table("bench_audit_scale", MetaData(), Column("params", Text, nullable=False))
# Status events are made column by column from the model, so that a nullable column added to
# touch_events is written as the engine would leave it (NULL) and chained as such.
EVENT_COLUMNS = tuple(c.name for c in TouchEvent.__table__.columns)
CURRENT_COLUMNS = tuple(c.name for c in TouchCurrent.__table__.columns)


# --- output ----------------------------------------------------------------------------------


class Progress:
    """Rows/s on stderr while the ledger is built (one line per update, or in place on a tty)."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last = self.start

    def update(self, rows: int, day: dt.date, *, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < (0.5 if self.tty else 5):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        line = (
            f"  {self.label}: {rows:,}/{self.total:,} ledger rows (up to {day}), "
            f"{rows / elapsed:,.0f} rows/s, {elapsed:.1f} s"
        )
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            note(line)


def rss_mb() -> float | None:
    """The current resident set size (Linux), or None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS


# --- the population --------------------------------------------------------------------------

# Names, addresses and products come from the store's population generator
# (caretouch.store.population, shared with the demo). Every address is valid or missing: the
# ledger only holds what was sent, and a customer without one is suppressed (no_contact).
MIX = Mix(lunar=0.0, missing_phone=0.10, bad_phone=0.0, missing_email=0.12, bad_email=0.0)


@dataclass
class Customer:
    customer_id: str
    name: str
    locale: str
    zone: str  # "" when none is recorded
    tier: str
    phone: str | None
    email: str | None
    birth_date: dt.date
    policies: list[tuple[str, str]]  # (policy id, product)


def make_customers(n: int, seed: int) -> tuple[list[Customer], dict[str, Decimal]]:
    """``n`` customers (customer ``i`` has its birthday on day ``i % 365`` of the year) and
    the premium of each product (one per product, so that messages render once per shape)."""
    pop = Population(LAST_DAY, seed, MIX)
    r = pop.rng.random
    out = []
    prices: dict[str, Decimal] = {}
    pno = 0
    for i in range(n):
        person = pop.customer(i + 1, customer_id=f"C{i + 1:08d}")
        pop.customers.clear()  # only this script's view of the customer is kept
        policies = []
        for _ in range(1 + (r() < 0.4) + (r() < 0.15)):
            pno += 1
            product = pop.product(person.locale)[0]
            prices.setdefault(product, pop.list_price(product))
            policies.append((f"P{pno:08d}", product))
        out.append(
            Customer(
                customer_id=person.customer_id,
                name=person.name,
                locale=person.locale,
                zone=person.timezone,
                tier=person.tier,
                phone=person.phone or None,
                email=person.email or None,
                birth_date=(FIRST_DAY + dt.timedelta(days=i % 365)).replace(
                    year=1945 + int(r() * 60)
                ),
                policies=policies,
            )
        )
    return out, prices


# --- messages: rendered by the real templates, once per shape --------------------------------

NAME_MARK = "⟦NAME⟧"
POLICY_MARK = "⟦POLICY⟧"
YEARS_MARK = 7777
SENTINEL_OCCURRENCE = dt.date(1901, 3, 5)
SENTINEL_START = dt.date(1902, 4, 6)
SENTINEL_RENEWAL = dt.date(1903, 5, 7)


class Messages:
    """Real rendered messages, personalised by substitution (rendering each would be slow).

    Each (rule, channel, locale, product, days, holiday, years == 1) is rendered once with
    marker values; a message is then that rendering with the customer's name, policy id,
    years and dates put in. The content hash is computed on the final text, as the engine
    does.
    """

    def __init__(self, templates: TemplateStore, prices: dict[str, Decimal]) -> None:
        self.templates = templates
        self.prices = prices
        self.cache: dict[tuple[Any, ...], RenderedMessage] = {}
        self._longdate = templates.env.from_string("{{ d | longdate }}")

    @lru_cache(maxsize=65536)  # noqa: B019 (one instance per build)
    def longdate(self, locale: str, day: dt.date) -> str:
        return self._longdate.render(d=day, locale=locale)

    def _shape(
        self,
        rule: Rule,
        channel: Channel,
        locale: str,
        product: str | None,
        days: int | None,
        holiday: str | None,
        one_year: bool,
    ) -> RenderedMessage:
        key = (rule.id, channel, locale, product, days, holiday, one_year)
        shape = self.cache.get(key)
        if shape is None:
            ctx: dict[str, Any] = {
                "occurrence": SENTINEL_OCCURRENCE,
                "rule_id": rule.id,
                "customer": {
                    "customer_id": "C00000000",
                    "name": NAME_MARK,
                    "birth_date": dt.date(1970, 1, 1),
                    "birthday_calendar": "gregorian",
                    "locale": locale,
                    "timezone": None,
                    "tier": "C",
                    "status": "active",
                },
                "policy": None,
                "event": None,
                "years": 1 if one_year else YEARS_MARK,
                "days": days,
                "holiday": holiday,
            }
            if product is not None:
                ctx["policy"] = {
                    "policy_id": POLICY_MARK,
                    "customer_id": "C00000000",
                    "product": product,
                    "start_date": SENTINEL_START,
                    "renewal_date": SENTINEL_RENEWAL,
                    "status": "active",
                    "premium": self.prices[product],
                }
            shape = self.templates.render(rule.template, channel, locale, ctx)
            self.cache[key] = shape
        return shape

    def message(
        self,
        rule: Rule,
        channel: Channel,
        customer: Customer,
        policy: tuple[str, str] | None,
        occurrence: dt.date,
        start: dt.date | None,
        renewal: dt.date | None,
        days: int | None,
        years: int | None,
        holiday: str | None,
    ) -> RenderedMessage:
        locale = customer.locale
        shape = self._shape(
            rule,
            channel,
            locale,
            policy[1] if policy else None,
            days,
            holiday,
            years == 1,
        )
        swaps = [
            (self.longdate(locale, SENTINEL_OCCURRENCE), self.longdate(locale, occurrence)),
            (str(YEARS_MARK), str(years)),
        ]
        if policy is not None:
            swaps.append((POLICY_MARK, policy[0]))
            if start is not None:
                swaps.append((self.longdate(locale, SENTINEL_START), self.longdate(locale, start)))
            if renewal is not None:
                swaps.append(
                    (self.longdate(locale, SENTINEL_RENEWAL), self.longdate(locale, renewal))
                )

        def fill(value: str | None, name: str) -> str | None:
            if value is None:
                return None
            value = value.replace(NAME_MARK, name)
            for old, new in swaps:
                value = value.replace(old, new)
            return value

        html_name = str(escape(customer.name))
        return RenderedMessage(
            channel,
            body=fill(shape.body, customer.name) or "",
            subject=fill(shape.subject, customer.name),
            html=fill(shape.html, html_name),
        )


# --- the ledger, a year of daily runs --------------------------------------------------------

# Decisions when planning (rules other than the marketing holiday greeting), cumulative.
SUPPRESSIONS = (
    (0.035, "no_contact"),
    (0.060, "opted_out"),
    (0.095, "frequency_cap"),
    (0.100, "capacity"),
)
# What happens to a planned touch when it is sent, cumulative.
OUTCOMES = (
    (0.9670, "sent"),
    (0.9770, "retry"),  # a retryable failure, then sent on the next dispatch run
    (0.9960, "failed"),
    (1.0000, "unknown"),
)
FAILURES = (
    ("invalid_recipient", "provider rejected the recipient: number not in service"),
    ("provider_error", "HTTP 500 from provider: internal error"),
    ("opted_out", "recipient replied STOP earlier"),
    ("retries_exhausted", "HTTP 503 from provider: try again later"),
)
RULE_WEIGHTS = (("renewal-reminder", 0.40), ("birthday", 0.25), ("annual-review", 0.15))


@dataclass
class Chunk:
    """Rows for one insert transaction, with their chain entries."""

    touches: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    chain: list[dict[str, Any]] = field(default_factory=list)
    current: list[dict[str, Any]] = field(default_factory=list)  # touch_current (not chained)

    @property
    def rows(self) -> int:
        return len(self.touches) + len(self.attempts) + len(self.events)


@dataclass
class Pending:
    """A touch waiting for a dispatch run."""

    row: dict[str, Any]
    customer: Customer
    outcome: str
    message: RenderedMessage
    recipient: str
    template_hash: str
    attempt_no: int = 1


class LedgerWriter:
    """Makes the rows of a year of runs and chains them as ``chain.seal`` would."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.target = params["rows"]
        self.rng = random.Random(params["seed"])
        templates = TemplateStore(TEMPLATES_DIR)
        ruleset = load_rules(RULES_DIR, templates)
        if ruleset.errors:
            raise SystemExit(f"rule errors: {ruleset.errors}")
        self.rules = {r.id: r for r in ruleset.rules}
        self.default_zone = ruleset.policy.default_timezone
        self.templates = templates
        self.customers, self.prices = make_customers(max(400, self.target // 20), params["seed"])
        self.messages = Messages(templates, self.prices)
        # The rule files were edited once, mid-year: older touches carry the older hash.
        self.old_hash = {
            r.id: hashlib.sha256(f"{r.file_hash}:previous".encode()).hexdigest()
            for r in ruleset.rules
        }
        self.next_id = {"touches": 1, "touch_attempts": 1, "touch_events": 1}
        self.seq = 0
        self.previous = chain.GENESIS
        self.events_made = 0
        self.counts: Counter[str] = Counter()
        self.chunk = Chunk()

    # -- ids and sealing

    def _id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value

    def _seal(
        self,
        touches: list[dict[str, Any]],
        attempts: list[dict[str, Any]],
        events: list[dict[str, Any]],
        at: dt.datetime,
    ) -> None:
        """Chain one transaction's rows: touches, then attempts, then events, each by id."""
        for table, rows in (
            ("touches", touches),
            ("touch_attempts", attempts),
            ("touch_events", events),
        ):
            for row in rows:
                digest = chain.row_hash(table, row)
                self.previous = chain.link(self.previous, digest)
                self.seq += 1
                self.chunk.chain.append(
                    {
                        "seq": self.seq,
                        "table_name": table,
                        "row_id": row["id"],
                        "row_hash": digest,
                        "chain_hash": self.previous,
                        "at": at,
                    }
                )
        self.chunk.touches.extend(touches)
        self.chunk.attempts.extend(attempts)
        self.chunk.events.extend(events)

    def _event(
        self,
        touch_id: int,
        status: str,
        at: dt.datetime,
        run_id: str,
        *,
        attempt_id: int | None = None,
        reason: str | None = None,
        provider_message_id: str | None = None,
        detail: dict[str, Any] | None = None,
        send_at: dt.datetime | None = None,
        channel: str | None = None,
    ) -> dict[str, Any]:
        self.counts[f"event:{status}"] += 1
        row: dict[str, Any] = dict.fromkeys(EVENT_COLUMNS)
        row.update(
            id=self._id("touch_events"),
            touch_id=touch_id,
            attempt_id=attempt_id,
            status=status,
            reason=reason,
            provider_message_id=provider_message_id,
            detail=detail,
            send_at=send_at,
            at=at,
            run_id=run_id,
        )
        if "channel" in row:  # planned events name their channel, where the model has one
            row["channel"] = channel
        return row

    # -- a day

    def _holiday(self, day: dt.date) -> str | None:
        """The festival the holiday greeting is sent for on ``day``, if any."""
        wanted = self.rules["holiday-greeting"].trigger.holidays
        return next((h for h in holidays_on(day) if h in wanted), None)

    def _zone(self, customer: Customer) -> str:
        return customer.zone or self.default_zone

    def _pick(self, day: dt.date, holiday: str | None, taken: set[tuple[str, str]]) -> Any:
        """(rule, customer, policy, subject id) of one new touch of ``day``."""
        r = self.rng.random
        n = len(self.customers)
        for _ in range(50):
            x = r()
            if holiday and x < 0.75:
                rule_id = "holiday-greeting"
            else:
                x = r()
                rule_id = "thank-you"
                for rid, weight in RULE_WEIGHTS:
                    if x < weight:
                        rule_id = rid
                        break
                    x -= weight
            if rule_id == "birthday":  # customers whose birthday is the day
                slot = (day - FIRST_DAY).days % 365
                if slot >= n:
                    continue
                index = slot + 365 * int(r() * ((n - 1 - slot) // 365 + 1))
            else:
                index = int(r() * n)
            customer = self.customers[index]
            policy = customer.policies[int(r() * len(customer.policies))]
            rule = self.rules[rule_id]
            if rule.trigger.subject is SubjectKind.POLICY:
                subject = policy[0]
            elif rule.trigger.subject is SubjectKind.EVENT:
                self.events_made += 1
                subject = f"E{self.events_made:08d}"
            else:
                subject = customer.customer_id
            if (rule_id, subject) in taken:
                continue
            taken.add((rule_id, subject))
            return rule, customer, policy, subject
        raise RuntimeError(f"cannot find a free touch key on {day}")

    def _context(
        self,
        rule: Rule,
        customer: Customer,
        policy: tuple[str, str],
        subject: str,
        day: dt.date,
        holiday: str | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The touch's template context (as ``Touch.template_context``) and its facts."""
        r = self.rng.random
        kind = rule.trigger.kind
        facts: dict[str, Any] = {"policy": None, "start": None, "renewal": None}
        facts.update(days=None, years=None, holiday=holiday, event_id=None)
        ctx: dict[str, Any] = {
            "occurrence": day,
            "rule_id": rule.id,
            "customer": {
                "customer_id": customer.customer_id,
                "name": customer.name,
                "birth_date": customer.birth_date,
                "birthday_calendar": "gregorian",
                "locale": customer.locale,
                "timezone": customer.zone or None,
                "tier": customer.tier,
                "status": "active",
            },
        }
        tables = rule.trigger.tables
        if "policy" in tables:
            years_held = 1 + int(r() * 12)
            if kind is TriggerKind.DAYS_BEFORE:
                days = rule.trigger.offsets[int(r() * len(rule.trigger.offsets))]
                renewal: dt.date | None = day + dt.timedelta(days=days)
                start = add_years(renewal, -years_held) if renewal else None
                facts["days"] = days
            elif kind is TriggerKind.EVENT:
                renewal, start = None, day - dt.timedelta(days=rule.trigger.delay_days)
            else:  # anniversary of the start date: the annual review
                renewal, start = None, add_years(day, -years_held)
                facts["years"] = years_held
            facts.update(policy=policy, start=start, renewal=renewal)
            ctx["policy"] = {
                "policy_id": policy[0],
                "customer_id": customer.customer_id,
                "product": policy[1],
                "start_date": start,
                "renewal_date": renewal,
                "status": "active",
                "premium": self.prices[policy[1]],
            }
        if "event" in tables:
            zone = ZoneInfo(self._zone(customer))
            local = dt.datetime.combine(
                day - dt.timedelta(days=rule.trigger.delay_days),
                dt.time(8 + int(r() * 12), int(r() * 60), int(r() * 60)),
                zone,
            )
            facts["event_id"] = subject
            ctx["event"] = {
                "event_id": subject,
                "type": rule.trigger.event_type,
                "customer_id": customer.customer_id,
                "policy_id": policy[0],
                "occurred_at": local,
                "payload": {"channel": "agent" if r() < 0.6 else "app", "premium": "1200.00"},
            }
        if kind is TriggerKind.ANNIVERSARY and rule.id == "birthday":
            facts["years"] = day.year - customer.birth_date.year
        if kind is TriggerKind.ANNIVERSARY:
            ctx["years"] = facts["years"]
        if kind in (TriggerKind.DAYS_BEFORE, TriggerKind.DAYS_AFTER):
            ctx["days"] = facts["days"]
        if kind is TriggerKind.CALENDAR:
            ctx["holiday"] = holiday
        return encode(ctx), facts

    def day(self, day: dt.date, quota: int) -> None:
        """One daily run (plan, then the day's dispatch runs) making about ``quota`` rows."""
        r = self.rng.random
        holiday = self._holiday(day)
        plan_at = dt.datetime.combine(day, dt.time(0, 5), ZoneInfo(self.default_zone)).astimezone(
            UTC
        )
        run_id = f"airflow:care_daily:scheduled__{day.isoformat()}T00:00:00+00:00"
        hash_of = self.old_hash if day < FIRST_DAY + dt.timedelta(days=DAYS // 2) else None
        touches: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        pending: list[Pending] = []
        taken: set[tuple[str, str]] = set()
        made = 0
        while made < quota:
            rule, customer, policy, subject = self._pick(day, holiday, taken)
            context, facts = self._context(rule, customer, policy, subject, day, holiday)
            zone_name = self._zone(customer)
            send_at = dt.datetime.combine(day, rule.send_time, ZoneInfo(zone_name)).astimezone(UTC)
            usable = [
                ch
                for ch in rule.channels
                if (customer.phone if ch is Channel.SMS else customer.email) is not None
            ]
            channel = usable[0] if usable else None
            reason = None
            if channel is None:
                reason = "no_contact"
            elif rule.id == "holiday-greeting":
                if r() < 0.68:  # marketing: most customers have not consented
                    reason = "opted_out" if r() < 0.85 else "frequency_cap"
            else:
                x = r()
                for limit, why in SUPPRESSIONS:
                    if x < limit:
                        reason = why
                        break
            touch_id = self._id("touches")
            row = {
                "id": touch_id,
                "touch_key": f"{rule.id}|{rule.trigger.subject.value}:{subject}|{day.isoformat()}",
                "rule_id": rule.id,
                "rule_hash": hash_of[rule.id] if hash_of else rule.file_hash,
                "category": rule.category.value,
                "priority": rule.priority,
                "subject_kind": rule.trigger.subject.value,
                "subject_id": subject,
                "customer_id": customer.customer_id,
                "policy_id": policy[0] if facts["policy"] else None,
                "event_id": facts["event_id"],
                "occurrence": day,
                "send_at": send_at,
                "timezone": zone_name,
                "locale": customer.locale,
                "tier": customer.tier,
                "channel": None if reason in ("no_contact", "opted_out") else channel.value,
                "template_id": rule.template,
                "context": context,
                "created_at": plan_at,
                "run_id": run_id,
            }
            touches.append(row)
            self.counts["touches"] += 1
            explain = [f"{rule.trigger.kind.value} {rule.id} on {day.isoformat()}"]
            if reason is not None:
                explain.append(f"suppressed ({reason}): see the contact policy")
                events.append(
                    self._event(
                        touch_id,
                        "suppressed",
                        plan_at,
                        run_id,
                        reason=reason,
                        detail={"explain": explain},
                    )
                )
                made += 2
                continue
            assert channel is not None
            explain.append(f"channel {channel.value}: first usable of {', '.join(usable)}")
            events.append(
                self._event(
                    touch_id,
                    "planned",
                    plan_at,
                    run_id,
                    detail={"explain": explain},
                    send_at=send_at,
                    channel=channel.value,
                )
            )
            x = r()
            outcome = next(name for limit, name in OUTCOMES if x < limit)
            message = self.messages.message(
                rule,
                channel,
                customer,
                facts["policy"],
                day,
                facts["start"],
                facts["renewal"],
                facts["days"],
                facts["years"],
                holiday,
            )
            recipient = customer.phone if channel is Channel.SMS else customer.email
            assert recipient is not None
            pending.append(
                Pending(
                    row,
                    customer,
                    outcome,
                    message,
                    recipient,
                    self.templates.template_hash(rule.template, channel, customer.locale),
                )
            )
            made += 8 if outcome == "retry" else 5
        self._seal(touches, [], events, plan_at)
        self._dispatch(pending)

    def _dispatch(self, pending: list[Pending]) -> None:
        """The dispatch runs: every DISPATCH_EVERY minutes, claim what is due and send it."""
        step = dt.timedelta(minutes=DISPATCH_EVERY)
        queue: list[tuple[dt.datetime, int, Pending]] = []
        for n, p in enumerate(pending):
            due = p.row["send_at"]
            slot = dt.datetime.fromtimestamp(
                -(-due.timestamp() // step.total_seconds()) * step.total_seconds(), UTC
            )
            heapq.heappush(queue, (slot + dt.timedelta(seconds=4), n, p))
        n = len(pending)
        while queue:
            at = queue[0][0]
            if at > NOW:
                return  # not yet: these touches stay planned
            batch = []
            while queue and queue[0][0] == at:
                batch.append(heapq.heappop(queue)[2])
            run_id = f"airflow:care_dispatch:scheduled__{at:%Y-%m-%dT%H:%M}:00+00:00"
            attempts, sending, results = [], [], []
            for p in batch:
                touch_id = p.row["id"]
                attempt_id = self._id("touch_attempts")
                attempts.append(
                    {
                        "id": attempt_id,
                        "touch_id": touch_id,
                        "attempt_no": p.attempt_no,
                        "channel": p.message.channel.value,
                        "transport": "outbox",
                        "recipient": p.recipient,
                        "template_id": p.row["template_id"],
                        "template_hash": p.template_hash,
                        "content_hash": p.message.content_hash(),
                        "subject": p.message.subject,
                        "body": p.message.body,
                        "html": p.message.html,
                        "created_at": at,
                        "run_id": run_id,
                    }
                )
                self.counts["attempts"] += 1
                sending.append(self._event(touch_id, "sending", at, run_id, attempt_id=attempt_id))
            for p, attempt in zip(batch, attempts, strict=True):
                touch_id, attempt_id = p.row["id"], attempt["id"]
                if p.outcome == "retry" and p.attempt_no == 1:
                    results.append(
                        self._event(
                            touch_id,
                            "planned",
                            at,
                            run_id,
                            attempt_id=attempt_id,
                            reason="retry",
                            detail={"detail": "HTTP 503 from provider: try again later"},
                        )
                    )
                    p.attempt_no = 2
                    n += 1
                    heapq.heappush(queue, (at + step, n, p))
                elif p.outcome in ("sent", "retry"):
                    safe = p.row["touch_key"].replace("|", "_").replace(":", "_")
                    results.append(
                        self._event(
                            touch_id,
                            "sent",
                            at,
                            run_id,
                            attempt_id=attempt_id,
                            provider_message_id=f"outbox:{safe}.{p.attempt_no}.{attempt['channel']}.json",
                        )
                    )
                elif p.outcome == "failed":
                    reason, why = FAILURES[int(self.rng.random() * len(FAILURES))]
                    results.append(
                        self._event(
                            touch_id,
                            "failed",
                            at,
                            run_id,
                            attempt_id=attempt_id,
                            reason=reason,
                            detail={"detail": why},
                        )
                    )
                else:
                    results.append(
                        self._event(
                            touch_id,
                            "unknown",
                            at,
                            run_id,
                            attempt_id=attempt_id,
                            reason="unknown",
                            detail={"detail": "no answer from provider within 30 s"},
                        )
                    )
            # claim_many's transaction, then append_many's (same ``now``: one dispatch run)
            self._seal([], attempts, sending, at)
            self._seal([], [], results, at)

    def chunks(self) -> Iterator[tuple[dt.date, Chunk]]:
        """The whole year, in insert transactions of about COMMIT_ROWS ledger rows."""
        weights = [4 if self._holiday(FIRST_DAY + dt.timedelta(days=i)) else 1 for i in range(DAYS)]
        total_weight = sum(weights)
        done = 0
        cumulative = 0
        for i in range(DAYS):
            day = FIRST_DAY + dt.timedelta(days=i)
            cumulative += weights[i]
            quota = round(self.target * cumulative / total_weight) - done
            before = self.chunk.rows
            self.day(day, quota)
            done += self.chunk.rows - before
            if self.chunk.rows >= COMMIT_ROWS or i == DAYS - 1:
                self.chunk.current = current_rows(self.chunk.events)
                yield day, self.chunk
                self.chunk = Chunk()


def current_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``touch_current`` rows of these events' touches, as ``Ledger.refresh_current``
    makes them: the touch's latest event (chunks hold whole days, so every touch's events
    are in one chunk), its status, reason and send time, and whether it is final."""
    latest: dict[int, dict[str, Any]] = {}
    for e in events:  # in id order
        latest[e["touch_id"]] = e
    rows = []
    for e in latest.values():
        row: dict[str, Any] = {}
        for name in CURRENT_COLUMNS:
            if name == "event_id":
                row[name] = e["id"]
            elif name == "final":
                row[name] = bool(isinstance(e["detail"], dict) and e["detail"].get("final"))
            else:
                row[name] = e.get(name)
        rows.append(row)
    return rows


# --- building the store ----------------------------------------------------------------------


def params_for(rows: int, seed: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR_VERSION,
        "rows": rows,
        "seed": seed,
        "first_day": FIRST_DAY.isoformat(),
        "last_day": LAST_DAY.isoformat(),
    }


def _check_columns(chunk: Chunk) -> None:
    """Every generated row has exactly its table's columns (what ``chain.row_dict`` reads)."""
    for table, rows in (
        (TouchRow.__table__, chunk.touches),
        (Attempt.__table__, chunk.attempts),
        (TouchEvent.__table__, chunk.events),
        (chain.ChainEntry.__table__, chunk.chain),
        (TouchCurrent.__table__, chunk.current),
    ):
        want = {c.name for c in table.columns}
        if rows and set(rows[0]) != want:
            raise SystemExit(
                f"generator bug: {table.name} rows have columns {sorted(set(rows[0]))}, "
                f"the table has {sorted(want)}"
            )


def build_store(store: Store, params: dict[str, Any], label: str) -> dict[str, Any]:
    """Fill an empty store; return the counts and build seconds (also kept in the marker)."""
    started = time.perf_counter()
    upgrade(store)
    if store.is_sqlite:
        store.dispose()
        event.listen(store.engine, "connect", bulk_pragmas)
    tables = {
        "touches": TouchRow.__table__,
        "touch_attempts": Attempt.__table__,
        "touch_events": TouchEvent.__table__,
        "ledger_chain": chain.ChainEntry.__table__,
        "touch_current": TouchCurrent.__table__,
    }
    writer = LedgerWriter(params)
    counts: Counter[str] = Counter()
    t_generate = t_insert = 0.0
    with store.engine.connect() as conn:
        if store.is_postgres:
            conn.exec_driver_sql("SET synchronous_commit TO OFF")
            conn.exec_driver_sql("SET maintenance_work_mem TO '256MB'")
        # Loading first and indexing afterwards is much faster (the UNIQUE constraints stay).
        indexes = [idx for t in LedgerBase.metadata.sorted_tables for idx in t.indexes]
        for idx in indexes:
            idx.drop(conn)
        conn.commit()
        progress = Progress(label, params["rows"])
        checked = False
        t0 = time.perf_counter()
        last_day = FIRST_DAY
        for last_day, chunk in writer.chunks():
            t1 = time.perf_counter()
            t_generate += t1 - t0
            if not checked:
                _check_columns(chunk)
                checked = True
            for name, rows in (
                ("touches", chunk.touches),
                ("touch_attempts", chunk.attempts),
                ("touch_events", chunk.events),
                ("touch_current", chunk.current),
                ("ledger_chain", chunk.chain),
            ):
                if rows:
                    conn.execute(insert(tables[name]), rows)
                    counts[name] += len(rows)
            conn.commit()
            t0 = time.perf_counter()
            t_insert += t0 - t1
            progress.update(ledger_rows(counts), last_day)
        progress.update(ledger_rows(counts), last_day, final=True)
        t_index = time.perf_counter()
        for idx in indexes:
            idx.create(conn)
        conn.commit()
        t_index = time.perf_counter() - t_index
        if store.is_postgres:
            # Explicit ids were inserted: move the sequences past them, as if the engine had
            # written the rows, and analyze now rather than whenever autovacuum gets to it.
            for name, key in (
                ("touches", "id"),
                ("touch_attempts", "id"),
                ("touch_events", "id"),
                ("ledger_chain", "seq"),
            ):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', '{key}'), "
                        f"(SELECT max({key}) FROM {name}))"
                    )
                )
                conn.exec_driver_sql(f"ANALYZE {name}")
        note(
            f"  {label}: generating and hashing {t_generate:.1f} s, inserting {t_insert:.1f} s, "
            f"{len(indexes)} indexes {t_index:.1f} s"
        )
        info = {
            **params,
            "counts": dict(counts),
            "statuses": {k: v for k, v in writer.counts.items() if k.startswith("event:")},
            "customers": len(writer.customers),
            "build_seconds": round(time.perf_counter() - started, 1),
            "generate_seconds": round(t_generate, 1),
            "insert_seconds": round(t_insert, 1),
            "index_seconds": round(t_index, 1),
        }
        MARKER.create(conn, checkfirst=True)
        conn.execute(MARKER.delete())
        conn.execute(insert(MARKER), {"params": json.dumps(info)})
        conn.commit()
    if store.is_sqlite:
        event.remove(store.engine, "connect", bulk_pragmas)
    store.dispose()  # closing the last connection also checkpoints SQLite's WAL
    return info


def ledger_rows(counts: Any) -> int:
    return int(counts["touches"] + counts["touch_attempts"] + counts["touch_events"])


def _build_child(
    url: str, connect_args: dict[str, Any], params: dict[str, Any], label: str
) -> None:
    store = open_store(url, connect_args=connect_args) if connect_args else open_store(url)
    build_store(store, params, label)


# --- the store: SQLite file or PostgreSQL schema ---------------------------------------------


@dataclass
class Target:
    label: str
    url: str
    connect_args: dict[str, Any]
    store: Store
    reset: Callable[[], None]  # wipe (the store is reopened afterwards)
    drop: Callable[[], None] | None = None

    def open(self) -> Store:
        self.store.dispose()
        if self.connect_args:
            self.store = open_store(self.url, connect_args=self.connect_args)
        else:
            self.store = open_store(self.url)
        return self.store


def sqlite_target(rows: int, directory: Path) -> Target:
    path = directory / f"audit_scale_{rows}.db"
    url = f"sqlite:///{path}"

    def reset() -> None:
        target.store.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    target = Target(str(path), url, {}, open_store(url), reset)
    return target


def postgres_target(rows: int, url: str, admin: Store) -> Target:
    schema = f"{SCHEMA_PREFIX}{rows}"
    connect_args = {"options": f"-csearch_path={schema}"}

    def reset() -> None:
        target.store.dispose()
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        target.store.dispose()
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    store = open_store(url, connect_args=connect_args)
    label = f"{admin.masked_url()} schema {schema}"
    target = Target(label, url, connect_args, store, reset, drop)
    return target


def prepare(target: Target, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Reuse the store if it was built with the same parameters, else build it."""
    params = params_for(args.rows, args.seed)
    marker = None if args.rebuild else read_marker(target.store, MARKER)
    same = marker is not None and {k: marker.get(k) for k in params} == params
    # A ledger built for an older schema (say, before a column was added) is built again.
    differences = (
        schema_differences(target.store, LedgerBase.metadata, extra_columns=True) if same else []
    )
    if marker is not None and same and not differences:
        note(f"{target.label}: reusing the ledger built with {params}")
        return marker, f"reused ({marker['build_seconds']:.0f} s)"
    why = (
        "--rebuild"
        if args.rebuild
        else "no ledger"
        if marker is None
        else f"schema changed: {differences[0]}"
        if differences
        else "other parameters"
    )
    note(f"{target.label}: building about {args.rows:,} ledger rows ({why})")
    target.reset()
    # In a child process, so that this process's peak RSS is the measurements' own.
    child = multiprocessing.get_context("spawn").Process(
        target=_build_child,
        args=(target.url, target.connect_args, params, f"build {args.rows:,}"),
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"the build failed (exit code {child.exitcode})")
    target.open()
    marker = read_marker(target.store, MARKER)
    if marker is None:
        raise SystemExit("the build wrote no marker")
    return marker, f"{marker['build_seconds']:.1f} s"


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Plan:
    lines: list[str]
    scans: list[str]  # tables read whole
    sorts: bool  # every match is read and sorted before the page is cut

    @property
    def verdict(self) -> str:
        if self.scans:
            return f"FULL SCAN of {', '.join(self.scans)}"
        return "index" + (", sorts all matches" if self.sorts else "")


def explain(store: Store, stmt: Any) -> Plan:
    prefix = "EXPLAIN QUERY PLAN" if store.is_sqlite else "EXPLAIN"
    with store.read_session() as session:
        rows = session.execute(Explain(stmt, prefix)).all()
    if store.is_sqlite:
        lines = [str(r[-1]) for r in rows]
        scans = [
            line.split()[1]
            for line in lines
            if line.startswith("SCAN ")
            and not line.startswith(("SCAN CONSTANT", "SCAN ANON"))
            and "INDEX" not in line
        ]
        sorts = any("TEMP B-TREE FOR ORDER BY" in line for line in lines)
    else:
        lines = [str(r[0]).split("  (cost")[0].strip().removeprefix("->").strip() for r in rows]
        scans = [
            line.split("Seq Scan on ")[1].split()[0] for line in lines if "Seq Scan on " in line
        ]
        sorts = any(line.startswith("Sort") for line in lines)
    return Plan(lines, scans, sorts)


class StatementCounter:
    """Counts the SQL statements sent, and among them the pages of touches read."""

    def __init__(self, store: Store) -> None:
        self.statements = 0
        self.pages = 0
        event.listen(store.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements += 1
        if (
            statement.lstrip().startswith("SELECT touches.id")
            and "ORDER BY touches.id" in statement
        ):
            self.pages += 1

    def reset(self) -> None:
        self.statements = self.pages = 0


@dataclass
class Line:
    """One row of the summary."""

    name: str
    rows: int
    seconds: float
    note: str = ""
    rated: bool = False  # a throughput (rows per second) is meaningful

    @property
    def rate(self) -> str:
        if not self.rated or self.seconds <= 0:
            return "-"
        return f"{self.rows / self.seconds:,.0f}/s"


def time_verify(store: Store, label: str) -> tuple[audit.VerifyReport, Line]:
    gc.collect()
    t0 = time.perf_counter()
    report = audit.verify(store)
    seconds = time.perf_counter() - t0
    return report, Line(label, report.entries, seconds, rated=True)


def time_export(
    store: Store, filters: audit.Filters, label: str
) -> tuple[Line, dict[str, float | None]]:
    """Iterate the touches as ``care audit export`` does, writing CSV to the null device."""
    gc.collect()
    samples: list[float] = []
    start_rss = rss_mb()
    n = 0
    t0 = time.perf_counter()
    with open(os.devnull, "w", encoding="utf-8", newline="") as sink:
        writer: csv.DictWriter[str] | None = None
        for row in audit.touches(store, filters):
            if writer is None:
                writer = csv.DictWriter(sink, fieldnames=list(row), lineterminator="\n")
                writer.writeheader()
            writer.writerow(row)
            n += 1
            if n % 2_000 == 0:
                current = rss_mb()
                if current is not None:
                    samples.append(current)
    seconds = time.perf_counter() - t0
    memory = {
        "start": start_rss,
        "min": min(samples) if samples else None,
        "max": max(samples) if samples else None,
        "end": rss_mb(),
        "peak": peak_rss_mb(),
    }
    return Line(label, n, seconds, rated=True), memory


@dataclass
class Query:
    name: str
    filters: audit.Filters
    after: int = 0
    limit: int | None = PAGE_LIMIT


@dataclass
class QueryResult:
    query: Query
    found: int
    times: list[float]
    statements: int
    pages: int
    plan: Plan

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1000


def run_query(store: Store, counter: StatementCounter, q: Query, repeat: int) -> QueryResult:
    """Explain the page query, warm up, then time up to ``repeat`` runs (fewer when slow)."""
    plan = explain(store, audit.search._query(q.filters, q.after).limit(audit.PAGE))
    list(audit.touches(store, q.filters, after=q.after, limit=q.limit))  # warm-up
    times: list[float] = []
    found = 0
    for _ in range(repeat):
        if len(times) >= 2 and sum(times) > SLOW_BUDGET:
            break  # a search this slow needs no more runs to make the point
        counter.reset()
        t0 = time.perf_counter()
        found = len(list(audit.touches(store, q.filters, after=q.after, limit=q.limit)))
        times.append(time.perf_counter() - t0)
    return QueryResult(q, found, times, counter.statements, counter.pages, plan)


def time_detail(store: Store, touch_id: int, repeat: int) -> list[float]:
    audit.touch_detail(store, touch_id)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        audit.touch_detail(store, touch_id)
        times.append(time.perf_counter() - t0)
    return times


def pick_queries(store: Store) -> tuple[list[Query], dict[str, Any]]:
    """The searches to time, with values taken from the ledger itself."""
    with store.read_session() as session:
        max_id = session.scalar(select(func.max(TouchRow.id))) or 0
        customer = session.scalar(select(TouchRow.customer_id).where(TouchRow.id == max_id // 2))
        month_first, month_last = dt.date(2026, 5, 1), dt.date(2026, 5, 31)
        in_month = (
            TouchRow.rule_id == "renewal-reminder",
            TouchRow.occurrence >= month_first,
            TouchRow.occurrence <= month_last,
        )
        month_ids = session.scalars(
            select(TouchRow.id).where(*in_month).order_by(TouchRow.id)
        ).all()
        customer_touches = session.scalar(
            select(func.count()).select_from(TouchRow).where(TouchRow.customer_id == customer)
        )
        year_count = session.scalar(
            select(func.count()).select_from(TouchRow).where(TouchRow.rule_id == "renewal-reminder")
        )
    facts = {
        "max_id": max_id,
        "customer": customer,
        "customer_touches": customer_touches,
        "month_matches": len(month_ids),
        "year_matches": year_count,
    }
    rule_month = audit.Filters(rule_id="renewal-reminder", first=month_first, last=month_last)
    queries = [
        Query(f"customer {customer}", audit.Filters(customer_id=customer)),
        Query("rule renewal-reminder, May 2026", rule_month),
        Query(
            "rule renewal-reminder, whole year",
            audit.Filters(rule_id="renewal-reminder", first=FIRST_DAY, last=LAST_DAY),
        ),
        Query("status failed", audit.Filters(status="failed")),
        Query("status planned (pending)", audit.Filters(status="planned")),
        Query("status sent", audit.Filters(status="sent")),
        Query("deep page, no filter (after=90%)", audit.Filters(), after=int(max_id * 0.9)),
        Query(
            "deep page, rule + May (after=mid)",
            rule_month,
            after=month_ids[len(month_ids) // 2] if month_ids else 0,
        ),
    ]
    return queries, facts


def current_mismatches(store: Store) -> int:
    """Touches whose ``touch_current`` row is missing or is not their latest event."""
    sql = text(
        "SELECT count(*) FROM touches t "
        "LEFT JOIN touch_current c ON c.touch_id = t.id "
        "LEFT JOIN touch_events e ON e.id = "
        "  (SELECT max(x.id) FROM touch_events x WHERE x.touch_id = t.id) "
        "WHERE c.touch_id IS NULL OR e.id IS NULL OR c.event_id <> e.id "
        "OR c.status <> e.status OR coalesce(c.reason, '') <> coalesce(e.reason, '')"
    )
    with store.read_session() as session:
        return int(session.execute(sql).scalar() or 0)


def db_size_mb(target: Target, store: Store) -> float | None:
    if store.is_sqlite:
        path = Path(target.label)
        return path.stat().st_size / 2**20 if path.exists() else None
    with store.engine.connect() as conn:
        size = conn.execute(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        ).scalar()
    return float(size) / 2**20 if size else None


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rows", default="1000000", help="ledger rows (touches, attempts, events)")
    p.add_argument(
        "--dir",
        default=str(Path(__file__).parent / ".data"),
        help="directory of the SQLite store (default: bench/.data)",
    )
    p.add_argument("--store-url", help="PostgreSQL URL (a schema per size) instead of SQLite")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each search (median)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--rebuild", action="store_true", help="build even if a matching store exists")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema after the run")
    args = p.parse_args(argv)
    args.rows = int(str(args.rows).replace("_", "").replace(",", ""))
    if args.rows < 5000:
        p.error("--rows must be at least 5000")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.store_url and args.store_url.startswith("sqlite"):
        p.error("for SQLite use --dir, not --store-url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin: Store | None = None
    if args.store_url:
        admin = open_store(args.store_url)
        backend = f"PostgreSQL {admin.masked_url()}"
        target = postgres_target(args.rows, args.store_url, admin)
    else:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        backend = "SQLite"
        target = sqlite_target(args.rows, Path(args.dir))
    try:
        return measure(target, args, backend)
    finally:
        target.store.dispose()
        if target.drop is not None and not args.keep:
            target.drop()
        if admin is not None:
            admin.dispose()


def measure(target: Target, args: argparse.Namespace, backend: str) -> int:
    info, build = prepare(target, args)
    store = target.store
    c = info["counts"]
    ledger_rows = c["touches"] + c["touch_attempts"] + c["touch_events"]
    size = db_size_mb(target, store)
    say(f"Ledger at {target.label} ({backend}), history {FIRST_DAY} .. {LAST_DAY}")
    say(
        f"  {ledger_rows:,} ledger rows: {c['touches']:,} touches, {c['touch_attempts']:,} "
        f"attempts, {c['touch_events']:,} status events; {c['ledger_chain']:,} chain entries; "
        f"{info['customers']:,} customers" + (f"; {size:,.0f} MB on disk" if size else "")
    )
    say(
        "  status events: "
        + ", ".join(f"{k.split(':')[1]} {v:,}" for k, v in sorted(info["statuses"].items()))
    )
    if build.startswith("reused"):
        say(f"  build: {build}")
    else:
        say(
            f"  build: {build} (generating and hashing {info['generate_seconds']} s, inserting "
            f"{info['insert_seconds']} s, indexes {info['index_seconds']} s)"
        )

    # 1. Correctness: the engine must accept the bulk-built chain.
    note("verifying the ledger (correctness)")
    report, first = time_verify(store, "verify (correctness run)")
    if not report.ok or report.entries != c["ledger_chain"]:
        say(
            f"\nFAILED: the bulk-built ledger does NOT verify: {report.problem or ''} "
            f"({report.entries:,} of {c['ledger_chain']:,} entries checked). The generator does "
            "not produce the engine's canonical form."
        )
        return 1
    say(f"\nverify: OK, {report.entries:,} chain entries match the rows and link up")
    # touch_current is derived, not chained: check it against the events it summarises.
    t0 = time.perf_counter()
    stale = current_mismatches(store)
    current_check = Line("touch_current = latest events (check)", c["touches"], 0.0)
    current_check.seconds = time.perf_counter() - t0
    if stale:
        say(
            f"\nFAILED: {stale:,} touches have no touch_current row, or one that is not their "
            "latest event: the generator does not build touch_current as refresh_current does."
        )
        return 1
    say("touch_current: OK, every touch's row names its latest event, status and reason")

    # 2. verify, timed again (warm), and the full export.
    note("timing verify")
    _, second = time_verify(store, "verify")
    note("timing the full export")
    export, memory = time_export(store, audit.Filters(), "export CSV (all touches)")

    def mb(value: float | None) -> str:
        return f"{value:,.0f} MB" if value is not None else "?"

    say(
        f"export: {export.rows:,} touches in {export.seconds:.1f} s; resident memory during "
        f"the export: start {mb(memory['start'])}, min {mb(memory['min'])}, max "
        f"{mb(memory['max'])}, end {mb(memory['end'])}; peak RSS of this process "
        f"{mb(memory['peak'])}"
    )
    flat = (
        memory["max"] is not None
        and memory["min"] is not None
        and memory["max"] - memory["min"] < 64
    )
    export.note = f"RSS {mb(memory['min'])}..{mb(memory['max'])}" + ("" if flat else " GROWS")

    # 3. The searches of the audit view: first page of each (and deep pages).
    note(f"timing the searches ({args.repeat} runs each after a warm-up)")
    counter = StatementCounter(store)
    queries, facts = pick_queries(store)
    results = [run_query(store, counter, q, args.repeat) for q in queries]
    detail_times = time_detail(store, facts["max_id"] // 3, args.repeat)
    note("timing a filtered export (one rule, the whole year)")
    year = audit.Filters(rule_id="renewal-reminder", first=FIRST_DAY, last=LAST_DAY)
    filtered, _ = time_export(store, year, "export CSV (renewal-reminder, whole year)")
    year_plan = explain(store, audit.search._query(year, 0).limit(audit.PAGE))
    filtered.note = f"{-(-filtered.rows // audit.PAGE)} pages" + (
        f"; each re-reads and sorts all {facts['year_matches']:,} matches"
        if year_plan.sorts
        else f"; {year_plan.verdict}"
    )

    say(
        f"\nsearches (first page of {PAGE_LIMIT}; median of up to {args.repeat} runs): "
        f"customer {facts['customer']} has {facts['customer_touches']} touches; "
        f"renewal-reminder has {facts['month_matches']:,} touches in May 2026, "
        f"{facts['year_matches']:,} in the year"
    )
    for res in results:
        q = res.query
        say(
            f"  {q.name:36s} {res.found:4d} found  {res.median_ms:9.1f} ms (x{len(res.times)})  "
            f"{res.statements:4d} statements, {res.pages:4d} page(s) of {audit.PAGE} touches "
            f"read  {res.plan.verdict}"
        )
        # One page query past the last match is normal; more mean rows dropped in Python.
        if res.pages > 2 and res.found < PAGE_LIMIT:
            say(
                f"      the filter is applied in Python: {res.pages} pages of {audit.PAGE} "
                f"touches read for {res.found} results"
            )
    say(
        f"  {'touch_detail (one touch)':36s}    1 found  {statistics.median(detail_times) * 1000:9.1f} ms"
    )

    say("\nEXPLAIN of the page query (audit.search._query(...).limit(PAGE)) of each search:")
    for res in results:
        say(f"  {res.query.name}: {res.plan.verdict}")
        for line in res.plan.lines:
            say(f"      {line}")

    scans = [
        res
        for res in results
        if res.plan.scans or (res.pages > 2 and res.pages * audit.PAGE >= facts["max_id"] / 2)
    ]
    sorted_all = [res for res in results if res.plan.sorts and not res.plan.scans]

    # 4. Summary.
    lines = [
        first,
        second,
        current_check,
        export,
        filtered,
        *[
            Line(
                f"page: {res.query.name}",
                res.found,
                res.median_ms / 1000,
                f"{res.pages} page(s), {res.plan.verdict}",
            )
            for res in results
        ],
        Line("touch_detail (one touch)", 1, statistics.median(detail_times)),
    ]
    say(f"\nSummary ({backend}, {ledger_rows:,} ledger rows, build {build}):")
    header = f"{'operation':46s} {'rows':>10s} {'seconds':>9s} {'ms':>9s} {'rate':>12s}  note"
    say(header)
    say("-" * len(header))
    for line in lines:
        say(
            f"{line.name:46s} {line.rows:>10,} {line.seconds:>9.3f} {line.seconds * 1000:>9.1f} "
            f"{line.rate:>12s}  {line.note}"
        )
    say(f"peak RSS of the measuring process: {mb(peak_rss_mb())}")
    for res in scans:
        how = (
            f"SQL plan {res.plan.verdict}"
            if res.plan.scans
            else f"filtered in Python: {res.pages:,} pages of {audit.PAGE} touches read, "
            f"{min(1.0, res.pages * audit.PAGE / max(facts['max_id'], 1)):.0%} of the table"
        )
        say(f"NOTE: '{res.query.name}' reads (nearly) the whole touches table ({how})")
    for res in sorted_all:
        why = (
            "touch_current's (status, touch_id) index is in touch id order, but the query "
            "orders by touches.id"
            if res.query.filters.status
            else "no index serves the filter and the id order together"
        )
        say(
            f"NOTE: '{res.query.name}' reads every matching touch and sorts them by id "
            f"for each page ({why})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
