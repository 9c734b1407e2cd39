"""The end of every run: a summary printed and stored, and progress while it runs.

Every ``care run`` and every DAG run that sends (``care_daily``, ``care_campaign_<id>``) ends
with a ``RunSummary``: what this run did (sent, failed, suppressed, waiting, ...) and the state
of its day in the ledger by rule, channel, tier, status and reason (``summary.DaySummary``).
It is printed (terminal or task log) and stored as one JSON file per run under the reports
directory (``CARE_REPORTS_DIR``, default ``reports/``):
``reports/runs/<local date>/<run id>.json``. JSON files, not a table: a summary is derived
data (the ledger stays the record, and any summary can be computed again from it), files need
no schema migration, and an operator can read, copy or attach them as they are.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ledger import Ledger
from ..storage import Location, at
from ..vocab import TouchStatus
from .day_summary import DaySummary


@dataclass
class RunSummary:
    run_id: str
    kind: str  # "care run", "care_daily", "care_campaign_<id>", ...
    day: dt.date
    finished_at: dt.datetime
    this_run: dict[str, int]
    summary: DaySummary
    rule_ids: list[str] | None = None  # a campaign run: only its own touches
    failures: list[str] = field(default_factory=list)
    # Rules that failed to load (file:line:col: message): the run went on without them.
    rule_errors: list[str] = field(default_factory=list)
    # Service obligations this run recorded as missed (their window is over): flagged.
    obligations_missed: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_ledger(
        cls,
        ledger: Ledger,
        *,
        run_id: str,
        kind: str,
        day: dt.date,
        finished_at: dt.datetime,
        this_run: dict[str, int],
        rule_ids: list[str] | None = None,
        failures: list[str] | None = None,
        rule_errors: list[str] | None = None,
        writers: Sequence[str] | None = None,
    ) -> RunSummary:
        """``this_run``: what the run's reports counted; the counts of what it recorded are
        replaced by the ledger's own (``Ledger.run_counts``), so they always agree.
        ``writers``: the run ids the run wrote under, when not only ``run_id`` (the tasks of
        a DAG run)."""
        summary = DaySummary.from_ledger(ledger, day)
        missed = ledger.missed_obligations(writers or run_id)
        if rule_ids is not None:
            summary.rows = [r for r in summary.rows if r["rule_id"] in rule_ids]
            missed = [m for m in missed if m["rule_id"] in rule_ids]
        return cls(
            run_id,
            kind,
            day,
            finished_at,
            this_run_counts(ledger, writers or run_id, this_run),
            summary,
            rule_ids,
            failures or [],
            rule_errors or [],
            missed,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "day": self.day.isoformat(),
            "finished_at": self.finished_at.astimezone(dt.timezone.utc).isoformat(),
            "rule_ids": self.rule_ids,
            "this_run": self.this_run,
            "failures": self.failures[:200],
            "rule_errors": self.rule_errors,
            "partial": bool(self.rule_errors),
            "obligations_missed": self.obligations_missed[:200],
            "ledger": self.summary.as_dict(),
        }

    def render(self) -> str:
        scope = f" (only {', '.join(self.rule_ids)})" if self.rule_ids else ""
        text = (
            self.summary.render()
            + f"\n\nthis run ({self.run_id}){scope}: "
            + ", ".join(f"{k} {v}" for k, v in self.this_run.items())
            + missed_text(self.obligations_missed)
        )
        return text + render_rule_errors(self.rule_errors)

    def store(self, reports_dir: Location | str | Path) -> Location:
        """Write the summary as ``<reports_dir>/runs/<day>/<run id>.json`` (a folder or a
        URL, ``storage.reports``); return where."""
        place = at(reports_dir).child(
            "runs", self.day.isoformat(), f"{safe_name(self.run_id)}.json"
        )
        place.write_text(
            json.dumps(self.as_dict(), ensure_ascii=False, indent=1, default=str) + "\n"
        )
        return place


def render_rule_errors(rule_errors: list[str]) -> str:
    """The closing lines of a partial run: the rules it ran without, and what became of
    their touches."""
    if not rule_errors:
        return ""
    return (
        f"\n\nPARTIAL: {len(rule_errors)} rule error(s); the broken rules were left out (their "
        "planned touches wait, `planned`, until the rules load again), the others ran:\n"
        + "\n".join(f"  {e}" for e in rule_errors)
    )


def this_run_counts(
    ledger: Ledger, run_id: str | Sequence[str], reported: dict[str, int] | None = None
) -> dict[str, int]:
    """A run's counts: what it recorded, read from the ledger (``Ledger.run_counts``), then
    what its reports counted that the ledger does not hold (waiting, held, skipped, events,
    ...)."""
    recorded = ledger.run_counts(run_id)
    return {**recorded, **{k: v for k, v in (reported or {}).items() if k not in recorded}}


def missed_text(missed: list[dict[str, Any]]) -> str:
    """The flag a summary raises for service obligations that could not go out in time."""
    if not missed:
        return ""
    lines = [
        "",
        "",
        f"SERVICE OBLIGATIONS MISSED: {len(missed)} could not go out within their window "
        "(reason obligation_missed; `care audit show ID` tells why):",
    ]
    lines += [
        f"  {m['touch_key']} (id {m['touch_id']}, due {m['occurrence']})" for m in missed[:50]
    ]
    if len(missed) > 50:
        lines.append(f"  ... and {len(missed) - 50} more (all in the stored summary)")
    return "\n".join(lines)


# What a run "changed" (a dispatch's sends, an event run's plans): a run without any of these
# stores no summary (``care_dispatch`` every 15 minutes, ``care_events`` on every sweep).
# The counts are those of ``Ledger.run_counts``: touches per status the run recorded, and two
# counts that are not statuses.
CHANGES = (
    TouchStatus.PLANNED,
    TouchStatus.SUPPRESSED,
    TouchStatus.SENT,
    TouchStatus.FAILED,
    TouchStatus.UNKNOWN,
    "retry",  # back to ``planned`` after a retryable failure
    "in_flight",  # left ``sending``: the provider's answer was unclear
)


def store_dispatch_summary(
    ledger: Ledger,
    reports_dir: Location | str | Path,
    this_run: dict[str, int],
    *,
    run_id: str,
    kind: str,
    now: dt.datetime,
    failures: list[str] | None = None,
    rule_errors: list[str] | None = None,
) -> Location | None:
    """A dispatch run (``care dispatch``, ``care_dispatch`` every 15 minutes) or an event run
    (``care_events``) stores its summary only when it recorded something (planned,
    suppressed, sent, failed, left unknown or in flight, retried) or ran with broken
    rules. Filed under the UTC date of ``now`` (a dispatch spans the dates in effect), with
    that date's ledger state. Returns where it went, or None when nothing was done."""
    summary = RunSummary.from_ledger(
        ledger,
        run_id=run_id,
        kind=kind,
        day=now.astimezone(dt.timezone.utc).date(),
        finished_at=now,
        this_run=this_run,
        failures=failures,
        rule_errors=rule_errors,
    )
    if not rule_errors and not any(summary.this_run.get(k) for k in CHANGES):
        return None
    return summary.store(reports_dir)


def safe_name(run_id: str) -> str:
    """A file name for a run id (``airflow:care_daily:scheduled__2026-...`` has colons)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")[:200]


def stored_summaries(reports_dir: Location | str | Path, day: dt.date) -> list[dict[str, Any]]:
    """The run summaries stored for a local date, oldest first."""
    folder = at(reports_dir).child("runs", day.isoformat())
    found = [json.loads(p.read_text()) for p in folder.objects(".json")]
    return sorted(found, key=lambda s: s["finished_at"])


class LogProgress:
    """Progress as periodic log lines (Airflow task logs have no terminal for a bar).

    Logs when at least ``every`` seconds have passed since the last line, and at the end.
    ``clock`` is a monotonic clock in seconds (``time.monotonic``), given by the caller.
    """

    def __init__(
        self,
        log: logging.Logger,
        label: str,
        clock: Callable[[], float],
        every: float = 30.0,
    ) -> None:
        self.log, self.label, self.clock, self.every = log, label, clock, every
        self.started = clock()
        self.last = self.started

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else 0.0
        self.log.info(
            "%s: %d/%d touches (%.0f%%), %.0f/s, about %.0f s left",
            self.label,
            done,
            total,
            100.0 * done / total if total else 100.0,
            rate,
            left,
        )


def chunk_progress(
    log: logging.Logger, label: str, total: int, clock: Callable[[], float], every: float = 30.0
) -> Callable[[int], None]:
    """A ``send_touches`` progress callback (touches per chunk) that logs periodically."""
    tracker = LogProgress(log, label, clock, every)
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        tracker(done[0], total)

    return step
