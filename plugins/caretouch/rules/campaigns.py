"""Campaign files: ``care_rules/campaigns/<id>.yaml``, one bounded, scheduled campaign each.

A campaign is what operations staff schedule (a festival greeting to tiers A and B, a
renewal-season push, a one-off notice): an audience, a channel preference, a template and a
category, between a ``start`` and an ``end`` date, on a ``schedule`` that is either a named
holiday (``spring_festival``, from ``dates.HOLIDAYS``) or a five-field cron expression read in
the customer's local time (``"0 10 * * 1"``: Mondays at 10:00).

Loading turns a campaign into an ordinary ``Rule`` whose ``calendar`` trigger lists the
campaign's due days explicitly, so the planner arbitrates campaigns and rules together: the
same caps, consent, blackout days, capacity and ledger. The campaign's id is its file name
(without ``.yaml``); it is the rule id in the ledger, and its Airflow DAG is
``care_campaign_<id>``. Errors are ``file:line:col`` like a rule file's; a broken campaign
file is left out and never stops the rules or the other campaigns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..dates import HOLIDAYS
from ..errors import Location, ValidationError
from ..render.templates import TemplateStore
from ..suggest import did_you_mean
from .build import build_rule
from .checks import schema_errors
from .contact_policy import ContactPolicy
from .model import HOLIDAY_OCCASION, Rule, Trigger, TriggerKind
from .schema import _CONDITION, RULE_PROPERTIES
from .yamlpos import Positions, load_with_positions, read_yaml_bytes

CAMPAIGN_DIR = "campaigns"
ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")
# Campaigns are bounded: a longer one is a rule (care_rules/*.yaml), not a campaign.
MAX_DAYS = 366
# An Airflow run of a campaign plans its local day D at 12:00 UTC on D - 1, as care_daily
# does: the day has then begun only east of UTC+12, hours before any send time.
RUN_TIME_UTC = dt.time(12, 0)

_DATE = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"}

CAMPAIGN_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://caretouch.dev/schema/campaign-file.json",
    "title": "Caretouch campaign file (care_rules/campaigns/<id>.yaml)",
    "type": "object",
    "required": [
        "description",
        "start",
        "end",
        "schedule",
        "channels",
        "template",
        "category",
        "priority",
    ],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "description": RULE_PROPERTIES["description"],
        "start": {**_DATE, "description": "First local date the campaign may touch (YYYY-MM-DD)."},
        "end": {**_DATE, "description": "Last local date the campaign may touch (YYYY-MM-DD)."},
        "schedule": {
            "type": "string",
            "minLength": 1,
            "description": "A holiday name (e.g. spring_festival) or a five-field cron "
            "expression in the customer's local time, e.g. '0 10 * * 1' (Mondays 10:00).",
            "examples": [*HOLIDAYS, "0 10 * * 1", "30 9 15 12 *"],
        },
        "send_time": {
            **RULE_PROPERTIES["send_time"],
            "description": "Local time of day, HH:MM, for a holiday schedule (a cron "
            "schedule gives its own hour and minute).",
        },
        "tiers": RULE_PROPERTIES["tiers"],
        "audience": {"$ref": "#/$defs/condition"},
        "channels": RULE_PROPERTIES["channels"],
        "template": RULE_PROPERTIES["template"],
        "category": RULE_PROPERTIES["category"],
        "priority": RULE_PROPERTIES["priority"],
        "defer_days": RULE_PROPERTIES["defer_days"],
        "occasion": {
            **RULE_PROPERTIES["occasion"],
            "description": "The occasion this campaign greets (e.g. spring_festival): a customer "
            "gets at most one touch per occasion and year, from the highest-priority rule or "
            "campaign; the others are suppressed (occasion_taken). 'holiday': the holiday of "
            "the schedule.",
        },
    },
    "$defs": {"condition": _CONDITION},
}


@dataclass(frozen=True)
class Campaign:
    """A loaded campaign: the rule the planner runs, and when it runs."""

    rule: Rule
    start: dt.date
    end: dt.date
    schedule: str
    days: tuple[dt.date, ...]  # the local dates it is due on, within [start, end]
    path: Path

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.id)

    @property
    def holiday(self) -> str | None:
        return self.schedule if self.schedule in HOLIDAYS else None

    def run_times(self) -> list[dt.datetime]:
        """When Airflow runs the campaign: 12:00 UTC the day before each due day."""
        return [
            dt.datetime.combine(day - dt.timedelta(days=1), RUN_TIME_UTC, dt.timezone.utc)
            for day in self.days
        ]


def dag_id_for(campaign_id: str) -> str:
    return f"care_campaign_{campaign_id}"


def dag_file_name(campaign_id: str) -> str:
    return f"{dag_id_for(campaign_id)}.py"


def dag_file_text(campaign_id: str) -> str:
    """The thin DAG file of a campaign, ``dags/care_campaign_<id>.py``.

    One file per campaign, so that a broken campaign is an import error of its own file only
    (Airflow keys import errors by file; see ``caretouch.airflow.campaigns``).
    """
    return (
        f'"""Airflow DAG file for care_rules/campaigns/{campaign_id}.yaml: wiring only '
        '(written by `care campaign dagfiles`)."""\n\n'
        "from caretouch.airflow.campaigns import build_campaign_dag\n\n"
        f'dag = build_campaign_dag("{campaign_id}")\n'
    )


@dataclass
class DagFileSync:
    written: list[Path]
    unchanged: list[Path]
    orphans: list[Path]  # DAG files whose campaign file is gone
    removed: list[Path]


def sync_dag_files(campaigns_dir: Path, dags_dir: Path, *, prune: bool = False) -> DagFileSync:
    """Write a DAG file for every campaign file (valid or not: a broken one must show up in
    Airflow as an import error); with ``prune``, delete those of campaigns that are gone."""
    result = DagFileSync([], [], [], [])
    wanted = {dag_file_name(p.stem): p.stem for p in campaign_files(campaigns_dir)}
    for name, campaign_id in sorted(wanted.items()):
        target = dags_dir / name
        text = dag_file_text(campaign_id)
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            result.unchanged.append(target)
            continue
        target.write_text(text, encoding="utf-8")
        result.written.append(target)
    for existing in sorted(dags_dir.glob(dag_file_name("*"))):
        if existing.name not in wanted:
            result.orphans.append(existing)
            if prune:
                existing.unlink()
                result.removed.append(existing)
    return result


def campaign_files(campaigns_dir: Path) -> list[Path]:
    if not campaigns_dir.is_dir():
        return []
    return sorted(p for p in campaigns_dir.iterdir() if p.suffix in (".yaml", ".yml"))


def load_campaigns(
    campaigns_dir: Path, templates: TemplateStore, policy: ContactPolicy
) -> tuple[list[Campaign], list[ValidationError]]:
    """Every valid campaign of ``campaigns_dir``, and the errors of the others."""
    campaigns: list[Campaign] = []
    errors: list[ValidationError] = []
    for path in campaign_files(campaigns_dir):
        campaign, file_errors = load_campaign_file(path, templates, policy)
        errors.extend(file_errors)
        if campaign is not None:
            campaigns.append(campaign)
    return campaigns, errors


def load_campaign_file(
    path: Path, templates: TemplateStore, policy: ContactPolicy
) -> tuple[Campaign | None, list[ValidationError]]:
    """One campaign file: the campaign, or None and the reasons (``file:line:col``)."""
    campaign_id = path.stem
    if not ID_PATTERN.match(campaign_id):
        return None, [
            ValidationError(
                f"a campaign's id is its file name: {campaign_id!r} must match "
                "[a-z][a-z0-9-]* (e.g. spring-festival-2027.yaml)",
                location=Location(str(path), 1, 1),
            )
        ]
    try:
        raw = read_yaml_bytes(path)
        data, pos = load_with_positions(raw.decode("utf-8"), str(path))
    except ValidationError as exc:
        return None, [exc]
    except UnicodeDecodeError as exc:
        return None, [ValidationError(f"not UTF-8 text: {exc}", location=Location(str(path)))]
    file_hash = hashlib.sha256(raw).hexdigest()
    if not isinstance(data, dict):
        return None, [ValidationError("a campaign file is a mapping", location=pos.at(()))]
    errors = schema_errors(data, CAMPAIGN_FILE_SCHEMA, pos)
    if errors:
        return None, _tag(errors, campaign_id)

    start, end = (_date(data[k], pos, k, errors) for k in ("start", "end"))
    if start is None or end is None:
        return None, _tag(errors, campaign_id)
    if end < start:
        errors.append(
            ValidationError(f"end {end} is before start {start}", location=pos.at(("end",)))
        )
    elif (end - start).days >= MAX_DAYS:
        errors.append(
            ValidationError(
                f"a campaign lasts at most {MAX_DAYS} days ({start} to {end} is "
                f"{(end - start).days + 1}); a standing greeting is a rule in care_rules/",
                location=pos.at(("end",)),
            )
        )
    schedule = data["schedule"].strip()
    send_time: dt.time | None = None
    days: list[dt.date] = []
    if not errors:
        if schedule in HOLIDAYS:
            days = holiday_days(schedule, start, end)
        else:
            try:
                cron = CronDays.parse(schedule)
            except ValueError as exc:
                hint = did_you_mean(schedule, HOLIDAYS) if " " not in schedule else ""
                errors.append(
                    ValidationError(
                        f"schedule {schedule!r} is neither a holiday ({', '.join(HOLIDAYS)}) "
                        f"nor a cron expression: {exc}{hint}",
                        location=pos.at(("schedule",)),
                    )
                )
            else:
                send_time = cron.time
                days = [d for d in _each_day(start, end) if cron.matches(d)]
                if "send_time" in data:
                    errors.append(
                        ValidationError(
                            "send_time comes from the cron schedule's hour and minute; "
                            "remove one of them",
                            location=pos.at(("send_time",), key=True),
                        )
                    )
                elif policy.quiet_hours.contains(send_time):
                    errors.append(
                        ValidationError(
                            f"the schedule's time {send_time:%H:%M} is inside the quiet hours "
                            f"{policy.quiet_hours} of the contact policy",
                            location=pos.at(("schedule",)),
                        )
                    )
        if not errors and not days:
            errors.append(
                ValidationError(
                    f"schedule {schedule!r} has no day between {start} and {end}",
                    location=pos.at(("schedule",)),
                )
            )
    if errors:
        return None, _tag(errors, campaign_id)

    item = {
        key: data[key]
        for key in (
            "description",
            "audience",
            "tiers",
            "channels",
            "template",
            "category",
            "priority",
            "send_time",
            "defer_days",
            "occasion",
        )
        if key in data
    }
    if item.get("occasion") == HOLIDAY_OCCASION:
        # The rule's trigger lists dates, not holidays: name the schedule's festival.
        if schedule not in HOLIDAYS:
            return None, _tag(
                [
                    ValidationError(
                        f"occasion: {HOLIDAY_OCCASION} names the schedule's holiday, but "
                        f"schedule {schedule!r} is not a holiday; name the occasion instead "
                        "(e.g. occasion: year-end)",
                        location=pos.at(("occasion",)),
                    )
                ],
                campaign_id,
            )
        item["occasion"] = schedule
    item["id"] = campaign_id
    item["trigger"] = {"kind": TriggerKind.CALENDAR.value, "dates": [d.isoformat() for d in days]}
    # The rule loader does the rest exactly as for a rule: audience fields and operators,
    # tiers, templates rendered with sample data, quiet hours. It reports at the campaign
    # file's own positions (the keys are the same; the trigger, which the file does not
    # have, falls back to the top of the file).
    rule, rule_errors = build_rule(item, (), pos, templates, policy, file_hash)
    if rule is None or rule_errors:
        return None, _tag(rule_errors, campaign_id)
    trigger = Trigger(TriggerKind.CALENDAR, dates=tuple((d.year, d.month, d.day) for d in days))
    rule = replace(rule, trigger=trigger, send_time=send_time or rule.send_time)
    return Campaign(rule, start, end, schedule, tuple(days), path), []


def _tag(errors: list[ValidationError], campaign_id: str) -> list[ValidationError]:
    for error in errors:
        error.rule_id = campaign_id
    return errors


def _date(text: str, pos: Positions, key: str, errors: list[ValidationError]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        errors.append(ValidationError(f"{text!r} is not a real date", location=pos.at((key,))))
        return None


def _each_day(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def holiday_days(name: str, first: dt.date, last: dt.date) -> list[dt.date]:
    """The dates of festival ``name`` in [first, last]."""
    found = []
    for year in range(first.year, last.year + 1):
        try:
            day = HOLIDAYS[name](year)
        except (ValueError, IndexError):  # outside the lunar tables
            continue
        if day is not None and first <= day <= last:
            found.append(day)
    return found


_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _cron_field(text: str, low: int, high: int, names: list[str] | None = None) -> set[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} must be at least 1")

        def number(word: str) -> int:
            if names and word in names:
                return names.index(word) + (1 if names is _MONTHS else 0)
            if not word.isdigit():
                raise ValueError(f"{word!r} is not a number")
            return int(word)

        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            first, last = number(a), number(b)
        else:
            first = number(body)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high and first <= last):
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


@dataclass(frozen=True)
class CronDays:
    """The day part of a cron expression (which local days), and its time of day.

    Standard five fields: minute hour day-of-month month day-of-week. Minute and hour must be
    single numbers: they are the send time. When both day fields are restricted, a day
    matching either is due (cron's own rule).
    """

    time: dt.time
    days_of_month: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool

    @classmethod
    def parse(cls, text: str) -> CronDays:
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"a cron expression has 5 fields, this one has {len(fields)}")
        minute, hour, dom, month, dow = fields
        if not (minute.isdigit() and hour.isdigit()):
            raise ValueError("minute and hour must be single numbers (they are the send time)")
        if int(hour) > 23 or int(minute) > 59:
            raise ValueError(f"{hour}:{minute} is not a time of day")
        weekdays = {d % 7 for d in _cron_field(dow, 0, 7, _WEEKDAYS)}
        return cls(
            time=dt.time(int(hour), int(minute)),
            days_of_month=frozenset(_cron_field(dom, 1, 31)),
            months=frozenset(_cron_field(month, 1, 12, _MONTHS)),
            weekdays=frozenset(weekdays),
            dom_any=dom == "*",
            dow_any=dow == "*",
        )

    def matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days_of_month
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        if not self.dom_any and not self.dow_any:
            return in_month or in_week
        return in_month and in_week
