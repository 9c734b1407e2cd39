"""``plan_day``: every candidate touch due on a local date, with its decision.

Pure with respect to time: the day is an argument. Writes nothing; ``care plan`` prints what
it returns and ``care run`` hands it to the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable

from ..dates import LeapDayPolicy, anniversary_in_year, lunar_month_day, lunar_years_between
from ..errors import ValidationFailed
from ..policy import ContactPolicy, email_is_valid, phone_is_valid
from ..rules.loader import RuleSet
from ..rules.model import Rule, TriggerKind
from ..rules.sql import candidate_selects, row_splitter
from ..store.db import Store
from ..vocab import BirthdayCalendar, Category, Channel, Decision, SuppressionReason
from .touch import Touch


def _aware_utc(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes; the store always writes UTC.
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def _local_send_at(day: dt.date, at: dt.time, zone: dt.tzinfo) -> dt.datetime:
    local = dt.datetime.combine(day, at, tzinfo=zone)
    # Round-trip through UTC so a time in a DST gap lands on a real instant.
    return local.astimezone(dt.timezone.utc)


def _due(
    rule: Rule, rows: dict[str, dict | None], day: dt.date, policy: ContactPolicy
) -> Touch | None:
    """The touch for one candidate row if it is really due on ``day``, else None."""
    customer = rows["customer"]
    assert customer is not None
    zone = policy.zone(customer.get("timezone"))
    tz_name = zone.key  # the zone actually used (the default one when none is recorded)
    trig = rule.trigger
    touch = Touch(
        rule=rule,
        customer=customer,
        policy=rows.get("policy"),
        event=rows.get("event"),
        occurrence=day,
        send_at=_local_send_at(day, rule.send_time, zone),
        timezone=tz_name,
    )
    if trig.kind is TriggerKind.EVENT:
        event = touch.event
        assert event is not None
        occurred = _aware_utc(event["occurred_at"])
        event["occurred_at"] = occurred
        local_day = occurred.astimezone(zone).date()
        if local_day + dt.timedelta(days=trig.delay_days) != day:
            return None
        touch.explain.append(
            f"event {trig.event_type} at {occurred:%Y-%m-%d %H:%M}Z = local {local_day} "
            f"({tz_name}); due {trig.delay_days} day(s) later"
        )
        return touch
    assert trig.field is not None
    table_row = customer if trig.field.table == "customer" else touch.policy
    assert table_row is not None
    origin: dt.date = table_row[trig.field.column]
    if trig.kind is TriggerKind.ANNIVERSARY:
        lunar = (
            trig.field.name == "customer.birth_date"
            and customer.get("birthday_calendar") == BirthdayCalendar.LUNAR.value
        )
        if lunar:
            years = lunar_years_between(origin, day)
            kind = f"lunar anniversary (lunar month-day {lunar_month_day(origin)})"
        else:
            if anniversary_in_year(origin, day.year, trig.leap_day) != day:
                # The SQL pre-filter matched a month-day key that is not due this year
                # (e.g. a 29 February key on 1 March under the feb28 policy).
                return None
            years = day.year - origin.year
            kind = "anniversary"
        if years < trig.years_min or years < 0 or (lunar and day < origin):
            return None
        touch.years = years
        touch.explain.append(f"{trig.field.name} {origin} -> {kind}, year {years}")
        return touch
    touch.days = abs((origin - day).days)
    touch.explain.append(
        f"{trig.field.name} {origin} is {touch.days} day(s) {'after' if trig.kind is TriggerKind.DAYS_BEFORE else 'before'} {day}"
    )
    return touch


def _choose_channel(touch: Touch, policy: ContactPolicy) -> None:
    c = touch.customer
    rule = touch.rule
    channel = policy.usable_channel(
        rule.channels,
        rule.category,
        phone=c.get("phone"),
        email=c.get("email"),
        consent_sms=bool(c.get("consent_sms")),
        consent_email=bool(c.get("consent_email")),
        consent_marketing=bool(c.get("consent_marketing")),
    )
    if channel is not None:
        touch.channel = channel
        touch.explain.append(
            f"channel {channel.value}: first usable of {', '.join(ch.value for ch in rule.channels)}"
        )
        return
    why: list[str] = []
    if rule.category is Category.MARKETING and not c.get("consent_marketing"):
        why.append("no marketing consent")
    for ch in rule.channels:
        if ch is Channel.SMS:
            why.append(
                "sms: "
                + (
                    "no consent"
                    if not c.get("consent_sms")
                    else "phone missing"
                    if not c.get("phone")
                    else "phone not valid E.164"
                    if not phone_is_valid(c.get("phone"))
                    else "usable"
                )
            )
        else:
            why.append(
                "email: "
                + (
                    "no consent"
                    if not c.get("consent_email")
                    else "address missing"
                    if not c.get("email")
                    else "address not valid"
                    if not email_is_valid(c.get("email"))
                    else "usable"
                )
            )
    touch.suppress(SuppressionReason.NO_CONTACT, "; ".join(why))


def _apply_daily_cap(touches: list[Touch], policy: ContactPolicy, done: set[str]) -> None:
    """At most ``per_day`` sends per customer per local day; higher priority wins.

    Touches the ledger already holds as handled (``done``) took their place first: a touch
    planned later in the day (an event that came in after the daily run) cannot push the
    customer over the cap. Ties break on rule id, then touch key, so the same inputs always
    give the same plan.
    """
    cap = policy.per_day_cap
    if cap is None:
        return
    by_customer: dict[str, list[Touch]] = defaultdict(list)
    for t in touches:
        if t.decision is Decision.SEND:
            by_customer[t.customer_id].append(t)
    for group in by_customer.values():
        if len(group) <= cap:
            continue
        group.sort(key=lambda t: (t.key not in done, -t.rule.priority, t.rule.id, t.key))
        winners = group[:cap]
        for loser in group[cap:]:
            loser.suppress(
                SuppressionReason.FREQUENCY_CAP,
                f"caps.per_day={cap} in {policy.source or 'policy defaults'}: "
                f"{', '.join(w.rule.id for w in winners)} (priority "
                f"{', '.join(str(w.rule.priority) for w in winners)}) outranks "
                f"{loser.rule.id} (priority {loser.rule.priority})",
            )


def plan_day(
    store: Store,
    ruleset: RuleSet,
    day: dt.date,
    *,
    rule_ids: Iterable[str] | None = None,
    is_final: Callable[[list[str]], set[str]] | None = None,
) -> list[Touch]:
    """Every candidate touch due on local date ``day``, sent or suppressed, with the reason.

    ``is_final`` (usually ``Ledger.final_keys``) names the keys already sent, which are then
    reported as ``already_sent`` rather than planned again.
    """
    if ruleset.policy_errors:
        raise ValidationFailed(ruleset.policy_errors)
    wanted = set(rule_ids) if rule_ids is not None else None
    policy = ruleset.policy
    touches: list[Touch] = []
    seen: set[str] = set()
    with store.read_session() as session:
        for rule in ruleset.rules:
            if wanted is not None and rule.id not in wanted:
                continue
            for stmt in candidate_selects(rule, day):
                result = session.execute(stmt)
                split = row_splitter(list(result.keys()))
                for row in result:
                    touch = _due(rule, split(row), day, policy)
                    if touch is None or touch.key in seen:
                        continue
                    seen.add(touch.key)
                    touches.append(touch)
    for touch in touches:
        _choose_channel(touch, policy)
    done = is_final([t.key for t in touches]) if is_final is not None and touches else set()
    _apply_daily_cap(touches, policy, done)
    if done:
        for touch in touches:
            if touch.key in done and touch.decision is Decision.SEND:
                touch.suppress(
                    SuppressionReason.ALREADY_SENT, "the ledger holds this touch as handled"
                )
    touches.sort(key=lambda t: (t.send_at, -t.rule.priority, t.rule.id, t.customer_id, t.key))
    return touches


__all__ = ["LeapDayPolicy", "plan_day"]
