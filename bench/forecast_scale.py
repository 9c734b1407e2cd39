"""How long does ``care forecast`` take for 90 days on a 1,000,000-customer store?

Builds (or reuses) the store ``plan_scale.py`` builds for the same size, seed and day (the
file ``bench/.data/plan_scale_N.db`` is shared), then runs ``forecast.forecast`` over
``--days`` local dates from ``--from`` with the ledger as history, exactly as
``care forecast`` does, and prints the time per day (min, median, max and the slowest days
with their candidate counts), the total, the candidates per second and the peak resident
memory. Over a quarter, the bulk population is due on most days (birthdays, renewals,
anniversaries spread over the year), and a campaign or festival day plans a whole tier or
the whole store. Figures only; nothing is asserted.

    python bench/forecast_scale.py [--size 1000000] [--from 2026-11-23] [--days 90]
        [--dir bench/.data] [--rebuild] [--csv FILE] [--png FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import statistics
import sys
import time
from pathlib import Path

import plan_scale
from _common import RULES_DIR, SEED, TEMPLATES_DIR, note, say

from caretouch.ledger import Ledger
from caretouch.render.templates import TemplateStore
from caretouch.reports import forecast as forecast_module
from caretouch.rules.loader import load_rules


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1_000_000, help="customers in the store")
    p.add_argument("--from", dest="first", default="2026-11-23", help="first local date")
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--due", type=int, default=2000, help="as plan_scale.py (store identity)")
    p.add_argument("--dir", default=str(Path(__file__).parent / ".data"))
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--rebuild", action="store_true", help="build even if a matching store exists")
    p.add_argument("--csv", help="also write the forecast as CSV to this file")
    p.add_argument("--png", help="also write the forecast chart to this file")
    args = p.parse_args(argv)
    args.first = dt.date.fromisoformat(args.first)
    # plan_scale.prepare reads these.
    args.day = args.first
    args.store_url = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ruleset = load_rules(RULES_DIR, TemplateStore(TEMPLATES_DIR))
    if ruleset.errors:
        for err in ruleset.errors:
            note(f"rule error: {err}")
        return 1
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    spec = plan_scale.day_spec(ruleset, args.first)
    pools = plan_scale.make_pools(spec)
    due = plan_scale.due_set(args.due, spec, pools, ruleset.policy.default_timezone, args.seed)
    target = plan_scale.sqlite_target(args.size, Path(args.dir))
    try:
        prepared = plan_scale.prepare(target, args, ruleset, spec, pools, due)
        c = prepared.counts
        say(
            f"store {target.label}: {c.get('customers', 0):,} customers, "
            f"{c.get('policies', 0):,} policies, {c.get('events', 0):,} events; "
            f"build {prepared.build}"
        )
        say(
            f"rules and campaigns: {', '.join(r.id for r in ruleset.rules)}; "
            f"campaign days: "
            + ", ".join(f"{cp.id} {', '.join(map(str, cp.days))}" for cp in ruleset.campaigns)
        )
        last = args.first + dt.timedelta(days=args.days - 1)
        note(f"forecasting {args.days} day(s), {args.first} to {last}")
        marks: list[tuple[dt.date, float]] = []
        started = time.perf_counter()

        def progress(day: dt.date) -> None:
            marks.append((day, time.perf_counter()))
            previous = marks[-2][1] if len(marks) > 1 else started
            note(f"  {day}: {marks[-1][1] - previous:.2f} s")

        result = forecast_module.forecast(
            target.store,
            ruleset,
            args.first,
            args.days,
            history=Ledger(target.store),
            progress=progress,
        )
        total = time.perf_counter() - started
    finally:
        target.store.dispose()
    per_day: list[tuple[float, dt.date]] = []
    previous = started
    for day, at in marks:
        per_day.append((at - previous, day))
        previous = at
    seconds = [s for s, _ in per_day]
    candidates = result.total("candidates")
    by_day = {d: result.total("candidates", day=d) for d in result.dates}
    say(f"\nforecast of {args.days} day(s) on {args.size:,} customers: {total:.1f} s in all")
    say(
        f"per day: min {min(seconds):.3f} s, median {statistics.median(seconds):.3f} s, "
        f"max {max(seconds):.3f} s"
    )
    say(
        f"candidates: {candidates:,} ({candidates / total:,.0f}/s), "
        f"to send {result.total('send'):,}; median {statistics.median(by_day.values()):,.0f} "
        "candidates a day"
    )
    say("slowest days:")
    for secs, day in sorted(per_day, reverse=True)[:6]:
        rules = sorted(
            (r for r in result.rows if r.day == day), key=lambda r: r.candidates, reverse=True
        )
        top = ", ".join(f"{r.rule_id} {r.candidates:,}" for r in rules[:3])
        say(f"  {day} {secs:7.2f} s  {by_day[day]:9,} candidates  ({top})")
    ordinary = [s for s, d in per_day if by_day[d] < 50_000]
    if ordinary:
        say(
            f"days without a mass greeting or campaign ({len(ordinary)}): "
            f"{sum(ordinary):.1f} s in all, median {statistics.median(ordinary):.3f} s"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(f"peak RSS {peak:,.0f} MB")
    if args.csv:
        Path(args.csv).write_text(forecast_module.to_csv(result), encoding="utf-8")
        note(f"wrote {args.csv}")
    if args.png:
        Path(args.png).write_bytes(forecast_module.to_png(result))
        note(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
