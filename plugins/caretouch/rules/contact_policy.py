"""The contact policy (SPEC section 6): it stands above every rule.

It decides which channel may reach a customer (a valid address and the matching consent;
marketing also needs marketing consent), keeps messages out of quiet hours, and caps how many
touches one customer gets in a local day. It is read from ``care_rules/policy.yaml``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ..addresses import email_is_valid, find_zone, phone_is_valid, timezone_is_valid
from ..errors import Location, ValidationError, ValidationFailed
from ..premiums import DEFAULT_GRACE_DAYS
from ..sms import SmsPricing
from ..vocab import Category, Channel, TaskKind
from .checks import schema_errors
from .schema import POLICY_FILE_SCHEMA
from .yamlpos import KEY, load_with_positions, read_yaml_bytes

DEFAULT_TIMEZONE = "Asia/Shanghai"


def _parse_time(text: str) -> dt.time:
    hours, minutes = text.split(":")
    return dt.time(int(hours), int(minutes))


@dataclass(frozen=True)
class QuietHours:
    """Local hours in which nothing is sent; may wrap midnight (21:00-08:00)."""

    start: dt.time = dt.time(21, 0)
    end: dt.time = dt.time(8, 0)

    def contains(self, t: dt.time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_allowed(self, local: dt.datetime) -> dt.datetime:
        """``local`` itself if allowed, else the end of the quiet period it falls in."""
        if not self.contains(local.timetz().replace(tzinfo=None)):
            return local
        candidate = local.replace(
            hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0
        )
        if candidate <= local:
            candidate = (local + dt.timedelta(days=1)).replace(
                hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0
            )
        return candidate

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


CAP_WINDOWS: tuple[tuple[str, int], ...] = (("per_day", 1), ("per_7_days", 7), ("per_30_days", 30))
"""A cap's limits and the local days each counts over."""


@dataclass(frozen=True)
class Cap:
    """At most ``per_day`` touches in a local day, ``per_7_days`` in any 7 local days and
    ``per_30_days`` in any 30; of one ``category`` or ``channel`` only, when one is given."""

    per_day: int | None = None
    per_7_days: int | None = None
    per_30_days: int | None = None
    name: str = "caps"  # the clause, e.g. "caps.categories.marketing"
    category: str | None = None
    channel: str | None = None

    def limits(self) -> list[tuple[str, int, int]]:
        """(limit's name, its value, the days it counts over), for the limits given."""
        return [
            (name, value, days)
            for name, days in CAP_WINDOWS
            if (value := getattr(self, name)) is not None
        ]

    def without(self, names: set[str]) -> Cap:
        """This cap less the limits ``names`` (which a service level gives instead)."""
        cleared: dict[str, Any] = dict.fromkeys(names)
        return replace(self, **cleared)


def _cap(data: dict[str, Any] | None, name: str, **scope: str) -> Cap:
    data = data or {}
    return Cap(data.get("per_day"), data.get("per_7_days"), data.get("per_30_days"), name, **scope)


@dataclass(frozen=True)
class CapSet:
    """The caps of a ``caps`` block: of all touches, per category and per channel."""

    whole: Cap = Cap()
    categories: dict[Category, Cap] = field(default_factory=dict)
    channels: dict[Channel, Cap] = field(default_factory=dict)

    @classmethod
    def read(cls, data: dict[str, Any] | None, prefix: str = "caps") -> CapSet:
        data = data or {}
        return cls(
            _cap(data, prefix),
            {
                Category(name): _cap(c, f"{prefix}.categories.{name}", category=name)
                for name, c in (data.get("categories") or {}).items()
            },
            {
                Channel(name): _cap(c, f"{prefix}.channels.{name}", channel=name)
                for name, c in (data.get("channels") or {}).items()
            },
        )

    def applying_all(self) -> list[Cap]:
        return [self.whole, *self.categories.values(), *self.channels.values()]

    def applying(self, category: Category, channel: Channel | None) -> list[Cap]:
        caps = [self.whole]
        if category in self.categories:
            caps.append(self.categories[category])
        if channel is not None and channel in self.channels:
            caps.append(self.channels[channel])
        return caps


@dataclass(frozen=True)
class ServiceLevel:
    """A level of service (SPEC section 1: basic, value-added, premium) and the tiers it
    serves: its own caps, each replacing the same cap of the top-level ``caps`` for its
    customers, and its cadence, the longest its customers may go without a completed touch."""

    name: str
    tiers: tuple[str, ...]
    caps: CapSet = CapSet()
    cadence_days: int | None = None

    @property
    def clause_name(self) -> str:
        return f"levels.{self.name}"


@dataclass(frozen=True)
class Blackout:
    """Days on which ``categories`` are not sent: explicit dates and/or public holidays."""

    categories: frozenset[Category] = frozenset()
    dates: frozenset[dt.date] = frozenset()
    public_holidays: str | None = None  # "cn"

    def reason(self, day: dt.date, category: Category) -> str | None:
        """Why ``day`` is a blackout day for ``category``, or None."""
        if category not in self.categories:
            return None
        if day in self.dates:
            return f"{day} is listed in blackout.dates"
        if self.public_holidays == "cn":
            from ..dates import public_holiday_cn

            is_holiday, name = public_holiday_cn(day)
            if is_holiday:
                return f"{day} is a public holiday in China ({name})"
        return None


@dataclass(frozen=True)
class ContactPolicy:
    default_timezone: str = DEFAULT_TIMEZONE
    quiet_hours: QuietHours = QuietHours()
    caps: Cap = Cap()
    category_caps: dict[Category, Cap] = field(default_factory=dict)
    channel_caps: dict[Channel, Cap] = field(default_factory=dict)
    # Service levels by name; each tier belongs to at most one (``level_of``).
    levels: dict[str, ServiceLevel] = field(default_factory=dict)
    # Consents a category needs besides the channel's own; marketing always needs marketing.
    consent: dict[Category, frozenset[str]] = field(
        default_factory=lambda: {Category.MARKETING: frozenset({"marketing"})}
    )
    blackout: Blackout = Blackout()
    capacity: dict[Channel, int] = field(default_factory=dict)
    tier_order: tuple[str, ...] = ("A", "B", "C", "D")
    # A touch may go out until this long after its send time (outside quiet hours).
    sending_window_hours: int = 24
    # `care validate` warns about an SMS template of more segments than this (sms.py).
    sms_warn_segments: int = 3
    # What an SMS segment costs (``sms.cost_per_segment``, ``sms.currency``); None: no estimate.
    sms_pricing: SmsPricing | None = None
    # The internal addresses `care send-test` may send to (``test_recipients``): phone
    # numbers in E.164 and email addresses, as written in the file.
    test_recipients: tuple[str, ...] = ()
    # Days after a premium's due date the policy stays in force unpaid (``premiums``).
    grace_days: int = DEFAULT_GRACE_DAYS
    source: Location | None = None
    file_hash: str = ""
    # Where each clause stands in the file, for `care plan --explain`.
    clauses: dict[str, Location] = field(default_factory=dict)
    _caps_cache: dict[tuple[str | None, Category, Channel | None], list[Cap]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def clause(self, name: str, value: object = None) -> str:
        """``caps.per_day=1 (care_rules/policy.yaml:8:3)``; ``(default)`` when not in the file."""
        where = self.clauses.get(name)
        shown = name if value is None else f"{name}={value}"
        return f"{shown} ({where})" if where else f"{shown} (default)"

    def level_of(self, tier: str | None) -> ServiceLevel | None:
        """The service level that serves ``tier``; None when no level names it."""
        for level in self.levels.values():
            if tier in level.tiers:
                return level
        return None

    @property
    def longest_cap_days(self) -> int:
        """The most local days any cap counts over (the history the planner must read)."""
        caps = [self.caps, *self.category_caps.values(), *self.channel_caps.values()]
        for level in self.levels.values():
            caps += level.caps.applying_all()
        return max((days for cap in caps for _, _, days in cap.limits()), default=1)

    def caps_for(self, tier: str | None, category: Category, channel: Channel | None) -> list[Cap]:
        """The caps one more touch of ``category`` on ``channel`` to a customer of ``tier``
        must stay within: the top-level ones, less each limit the tier's service level gives
        instead, and the level's. Worked out once per (tier, category, channel)."""
        found = self._caps_cache.get((tier, category, channel))
        if found is not None:
            return found
        top = CapSet(self.caps, self.category_caps, self.channel_caps)
        level = self.level_of(tier)
        caps = top.applying(category, channel)
        if level is not None:
            own = level.caps.applying(category, channel)
            # The level's cap of the same scope replaces the top-level limits it gives.
            replaced = {
                (cap.category, cap.channel): {name for name, _, _ in cap.limits()} for cap in own
            }
            caps = [c.without(replaced.get((c.category, c.channel), set())) for c in caps]
            caps = [c for c in caps if c.limits()] + [c for c in own if c.limits()]
        self._caps_cache[(tier, category, channel)] = caps
        return caps

    def needs_marketing(self, category: Category) -> bool:
        return "marketing" in self.consent.get(category, frozenset()) or (
            category is Category.MARKETING
        )

    def zone(self, name: str | None) -> ZoneInfo:
        """The customer's zone; the default one when none is recorded or it is unknown."""
        return (
            find_zone(name or self.default_timezone)
            or find_zone(self.default_timezone)
            or ZoneInfo("UTC")
        )

    def usable_channel(
        self,
        preference: tuple[Channel, ...],
        category: Category,
        *,
        phone: str | None,
        email: str | None,
        consent_sms: bool,
        consent_email: bool,
        consent_marketing: bool,
        agent_id: str | None = None,
        task_kind: TaskKind | None = None,
    ) -> Channel | None:
        """The first channel in ``preference`` with a valid address and consent, or None.

        ``agent_task`` (a task of ``task_kind``) is usable when the customer has an agent
        (``agent_id``); a call also needs what an SMS needs, a valid phone and SMS consent
        (the customer's consent to be contacted by phone is ``consent_sms``)."""
        if self.needs_marketing(category) and not consent_marketing:
            return None
        for channel in preference:
            if (
                channel is Channel.AGENT_TASK
                and agent_problem(agent_id, task_kind, phone=phone, consent_sms=consent_sms) is None
            ):
                return channel
            if channel is Channel.SMS and consent_sms and phone_is_valid(phone):
                return channel
            if channel is Channel.EMAIL and consent_email and email_is_valid(email):
                return channel
        return None


def _levels(
    data: dict[str, Any], pos: Any
) -> tuple[dict[str, ServiceLevel], list[ValidationError]]:
    """The service levels of ``levels:``, and an error for each tier named by two of them."""
    levels: dict[str, ServiceLevel] = {}
    errors: list[ValidationError] = []
    served: dict[str, str] = {}
    for name, body in data.items():
        for i, tier in enumerate(body["tiers"]):
            if tier in served:
                errors.append(
                    ValidationError(
                        f"tier {tier} is in levels {served[tier]} and {name}: a tier belongs "
                        "to one service level",
                        location=pos.at(("levels", name, "tiers", i)),
                    )
                )
            served.setdefault(tier, name)
        levels[name] = ServiceLevel(
            name,
            tuple(body["tiers"]),
            CapSet.read(body.get("caps"), f"levels.{name}.caps"),
            body.get("cadence_days"),
        )
    return levels, errors


def agent_problem(
    agent_id: str | None, task_kind: TaskKind | None, *, phone: str | None, consent_sms: bool
) -> str | None:
    """Why an ``agent_task`` of ``task_kind`` cannot be given for this customer, or None."""
    if not agent_id:
        return "no agent"
    if task_kind is TaskKind.CALL:
        if not consent_sms:
            return "a call needs phone consent (consent_sms): not given"
        if not phone_is_valid(phone):
            return "a call needs the customer's phone: missing or not valid E.164"
    return None


def load_policy(path: str | Path) -> ContactPolicy:
    """Read ``policy.yaml``; a missing file gives the defaults. Raises ``ValidationFailed``."""
    path = Path(path)
    if not path.is_file():
        return ContactPolicy()
    raw = read_yaml_bytes(path)
    data, pos = load_with_positions(raw.decode("utf-8"), str(path))
    data = data if data is not None else {}
    errors = schema_errors(data, POLICY_FILE_SCHEMA, pos)
    if errors:
        raise ValidationFailed(errors)
    tz = data.get("default_timezone", DEFAULT_TIMEZONE)
    if not timezone_is_valid(tz):
        raise ValidationFailed(
            [
                ValidationError(
                    f"unknown time zone {tz!r} (use an IANA name like Asia/Shanghai)",
                    location=pos.at(("default_timezone",)),
                )
            ]
        )
    quiet: dict[str, Any] = data.get("quiet_hours") or {}
    caps: dict[str, Any] = data.get("caps") or {}
    blackout: dict[str, Any] = data.get("blackout") or {}
    errors = []
    dates = set()
    for i, text in enumerate(blackout.get("dates", [])):
        try:
            dates.add(dt.date.fromisoformat(str(text)))
        except ValueError:
            errors.append(
                ValidationError(
                    f"{text!r} is not a real date", location=pos.at(("blackout", "dates", i))
                )
            )
    levels, level_errors = _levels(data.get("levels") or {}, pos)
    errors += _test_recipient_errors(data.get("test_recipients") or [], pos)
    errors += level_errors
    if errors:
        raise ValidationFailed(errors)
    top = CapSet.read(caps)
    # Each clause's location is where its key stands, e.g. "caps.per_day" -> policy.yaml:11:3.
    clauses = {
        ".".join((*path[:-2], path[-1])): Location(pos.file, *mark)
        for path, mark in pos.marks.items()
        if len(path) >= 2 and path[-2] == KEY and all(isinstance(p, str) for p in path)
    }
    consent = {
        Category(name): frozenset(needs) for name, needs in (data.get("consent") or {}).items()
    }
    consent.setdefault(Category.MARKETING, frozenset({"marketing"}))
    consent[Category.MARKETING] = consent[Category.MARKETING] | {"marketing"}
    return ContactPolicy(
        default_timezone=tz,
        quiet_hours=QuietHours(
            _parse_time(quiet.get("start", "21:00")), _parse_time(quiet.get("end", "08:00"))
        ),
        caps=top.whole,
        category_caps=top.categories,
        channel_caps=top.channels,
        levels=levels,
        consent=consent,
        blackout=Blackout(
            categories=frozenset(Category(c) for c in blackout.get("categories", [])),
            dates=frozenset(dates),
            public_holidays=blackout.get("public_holidays"),
        ),
        capacity={Channel(name): c["per_day"] for name, c in (data.get("capacity") or {}).items()},
        tier_order=tuple(data.get("tier_order", ("A", "B", "C", "D"))),
        sending_window_hours=data.get("sending_window_hours", 24),
        sms_warn_segments=(data.get("sms") or {}).get("warn_segments", 3),
        sms_pricing=_sms_pricing(data.get("sms") or {}),
        test_recipients=tuple(str(a) for a in data.get("test_recipients") or []),
        grace_days=(data.get("premiums") or {}).get("grace_days", DEFAULT_GRACE_DAYS),
        source=Location(str(path)),
        file_hash=hashlib.sha256(raw).hexdigest(),
        clauses=clauses,
    )


def _sms_pricing(sms: dict[str, Any]) -> SmsPricing | None:
    """``sms.cost_per_segment`` in ``sms.currency`` (the schema requires both together);
    read through ``str`` so that 0.0079 stays exactly 0.0079."""
    if sms.get("cost_per_segment") is None:
        return None
    return SmsPricing(Decimal(str(sms["cost_per_segment"])), str(sms["currency"]))


def _test_recipient_errors(addresses: list[Any], pos: Any) -> list[ValidationError]:
    """Each of ``test_recipients`` must be a phone number in E.164 or an email address."""
    return [
        ValidationError(
            f"{address!r} is neither a phone number in E.164 (+8613800000000) nor an email address",
            location=pos.at(("test_recipients", i)),
        )
        for i, address in enumerate(addresses)
        if not (phone_is_valid(str(address)) or email_is_valid(str(address)))
    ]
