"""Running rule fixtures: each test on a scratch store with a frozen clock, its expectations
checked against what the engine planned, rendered and (with ``now:``) sent.

Without ``now:`` a test plans its day (``plan.plan_day``, with the ledger the test's history
made) and renders each touch an expectation reads the text of, exactly as ``care preview``
does. With ``now:`` the day is run as ``care run`` runs it (``run.run_day``: recover, plan,
record, send what is due at that instant through the outbox), and expectations read the
ledger: each touch's status, reason, channel and send time, and the message it recorded.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from sqlalchemy import select

from ..channels.agent_task import AgentTaskTransport
from ..channels.outbox import OutboxTransport
from ..config import CareConfig
from ..errors import CareError, Location, ValidationError
from ..ledger import Ledger
from ..ledger.models import Attempt, TouchCurrent, TouchRow
from ..plan import plan_day
from ..plan.touch import Touch
from ..render.templates import TemplateStore
from ..rules.loader import RuleSet
from ..rules.model import Rule
from ..run.day import run_day
from ..run.engine import CareEngine
from ..sms import describe, sms_size
from ..vocab import Channel, Decision
from .fixtures import Case, Expectation, fixture_files, load_fixture_file, snapshot_path
from .scratch import ScratchStores, withdraw_consents, write_history, write_rows

RUN_ID = "care-test"
# A scratch key signs the unsubscribe links of emails a test sends (never a real one).
_TEST_KEY = b"care-test-unsubscribe-key"


@dataclass
class Observed:
    """One touch of the test's day as the engine decided it."""

    rule_id: str
    customer_id: str
    subject_id: str
    decision: str
    reason: str | None
    channel: str | None
    send_at: dt.datetime
    timezone: str
    locale: str
    template: str | None  # the template rendered (a task's brief for agent_task)
    status: str | None = None  # with ``now``: the ledger's current status
    variant: str | None = None
    subject: str | None = None  # an email's subject line
    body: str | None = None  # the rendered text (None: nothing rendered)
    render_error: str | None = None

    @property
    def text(self) -> str | None:
        """What ``contains`` and snapshots read: the subject line and the body."""
        if self.body is None:
            return None
        return f"Subject: {self.subject}\n\n{self.body}" if self.subject else self.body

    def describe(self) -> str:
        verdict = self.decision + (f" ({self.reason})" if self.reason else "")
        local = self.send_at.astimezone(ZoneInfo(self.timezone))
        via = f" on {self.channel}" if self.channel else ""
        return f"{verdict}{via} at {local:%Y-%m-%d %H:%M} local"


@dataclass
class Failure:
    where: Location
    test: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.test}: {self.message}"


@dataclass
class Coverage:
    """What the tests exercised: rules with a touch an expectation matched, and templates
    (per channel and locale) whose rendered text an expectation checked."""

    rules: set[str] = field(default_factory=set)
    templates: set[tuple[str, str, str]] = field(default_factory=set)  # template, channel, locale


@dataclass
class Results:
    tests: int = 0
    expectations: int = 0
    failures: list[Failure] = field(default_factory=list)
    failed_expectations: int = 0
    errors: list[ValidationError] = field(default_factory=list)
    snapshots_written: list[Path] = field(default_factory=list)
    coverage: Coverage = field(default_factory=Coverage)
    # One line per expectation checked, for ``care test -v``: (where, test, text).
    lines: list[tuple[Location, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors


class FixtureRunner:
    """Runs fixture files against one loaded rule set and template store."""

    def __init__(
        self,
        config: CareConfig,
        ruleset: RuleSet,
        templates: TemplateStore,
        *,
        update_snapshots: bool = False,
    ) -> None:
        self.config = config
        self.ruleset = ruleset
        self.templates = templates
        self.update_snapshots = update_snapshots
        self.stores = ScratchStores()

    def close(self) -> None:
        self.stores.close()

    def load(self, path: Path) -> tuple[list[Case], list[ValidationError]]:
        return load_fixture_file(path, self.ruleset)

    def run_files(
        self,
        paths: Iterable[Path],
        *,
        selected: Callable[[Case], bool] | None = None,
        results: Results | None = None,
    ) -> Results:
        results = results or Results()
        for path in paths:
            cases, errors = self.load(path)
            results.errors += errors
            for case in cases:
                if selected is None or selected(case):
                    self.run_case(case, results)
        return results

    def run_case(self, case: Case, results: Results) -> list[Failure]:
        """Run one test; its failures are added to ``results`` and returned."""
        before = len(results.failures)
        with self.stores.store() as (store, folder):
            problems = write_rows(store, case, self.ruleset)
            problems += withdraw_consents(store, case) if not problems else []
            history: set[str] = set()
            if not problems:
                history, found = write_history(store, case, self.ruleset)
                problems += found
            if problems:  # an error of the fixture: the test is not run
                results.errors += problems
                return []
            results.tests += 1
            engine = CareEngine(
                self.config.model_copy(
                    update={
                        "outbox_dir": str(folder / "outbox"),
                        "anchor_file": str(folder / "anchors.jsonl"),
                        # The scratch ledger's anchors are signed with a scratch key.
                        "anchor_key": SecretStr(_TEST_KEY.decode()),
                    }
                ),
                store,
                self.templates,
                self.ruleset,
                {
                    Channel.SMS: OutboxTransport(Channel.SMS, folder / "outbox"),
                    Channel.EMAIL: OutboxTransport(Channel.EMAIL, folder / "outbox"),
                    Channel.AGENT_TASK: AgentTaskTransport(),
                },
                None,
                _TEST_KEY,
            )
            # Every touch an expectation names is rendered: its SMS size is shown (-v).
            wants_text = {(e.rule, e.customer) for e in case.expect if e.decision != "none"}
            if case.now is None:
                observed = self._planned(engine, case, wants_text)
            else:
                observed = self._ran(engine, case, history)
        for exp in case.expect:
            results.expectations += 1
            failed = len(results.failures)
            self._check(case, exp, observed, results)
            results.failed_expectations += len(results.failures) > failed
        if case.exhaustive:
            named = [e for e in case.expect if e.decision != "none"]
            for obs in observed:
                if not any(_matches(e, obs) for e in named):
                    results.failures.append(
                        Failure(
                            case.where,
                            case.name,
                            f"unexpected touch {obs.rule_id} for {obs.customer_id} "
                            f"({obs.subject_id}): {obs.describe()} (the test is exhaustive)",
                        )
                    )
        return results.failures[before:]

    # -- what the engine did --------------------------------------------------------------------

    def _planned(
        self, engine: CareEngine, case: Case, wants_text: set[tuple[str, str | None]]
    ) -> list[Observed]:
        touches = plan_day(engine.store, self.ruleset, case.day, history=Ledger(engine.store))
        observed = []
        for touch in touches:
            obs = _observed(touch)
            if (touch.rule.id, touch.customer_id) in wants_text and touch.channel is not None:
                self._render(touch, obs)
            observed.append(obs)
        return observed

    def _render(self, touch: Touch, obs: Observed) -> None:
        assert touch.channel is not None
        try:
            message = touch.render(self.templates, touch.channel)
        except CareError as exc:
            obs.render_error = str(exc)
            return
        obs.subject, obs.body = message.subject, message.body

    def _ran(self, engine: CareEngine, case: Case, history: set[str]) -> list[Observed]:
        assert case.now is not None
        run_day(engine, case.day, run_id=RUN_ID, now=case.now)
        observed = []
        with engine.store.read_session() as session:
            rows = session.execute(
                select(TouchRow, TouchCurrent).join(
                    TouchCurrent, TouchCurrent.touch_id == TouchRow.id
                )
            ).all()
            for touch, current in rows:
                if touch.touch_key in history and touch.occurrence != case.day:
                    continue
                attempt = session.scalars(
                    select(Attempt)
                    .where(Attempt.touch_id == touch.id)
                    .order_by(Attempt.attempt_no.desc())
                    .limit(1)
                ).first()
                status = current.status
                decision = "suppress" if status == "suppressed" else "send"
                rule = self._rule(touch.rule_id)
                channel = current.channel or touch.channel
                observed.append(
                    Observed(
                        rule_id=touch.rule_id,
                        customer_id=touch.customer_id,
                        subject_id=touch.subject_id,
                        decision=decision,
                        reason=current.reason if decision == "suppress" else None,
                        channel=channel,
                        send_at=current.send_at or touch.send_at,
                        timezone=touch.timezone,
                        locale=touch.locale,
                        template=(
                            rule.task.brief
                            if rule and rule.task and channel == Channel.AGENT_TASK.value
                            else touch.template_id
                        ),
                        status=status,
                        variant=touch.variant,
                        subject=attempt.subject if attempt else None,
                        body=attempt.body if attempt else None,
                    )
                )
        return observed

    def _rule(self, rule_id: str) -> Rule | None:
        try:
            return self.ruleset.by_id(rule_id)
        except KeyError:
            return None

    # -- checking -------------------------------------------------------------------------------

    def _check(
        self, case: Case, exp: Expectation, observed: list[Observed], results: Results
    ) -> None:
        def fail(key: str, message: str) -> None:
            results.failures.append(Failure(exp.place(key), case.name, message))

        found = [o for o in observed if _matches(exp, o)]
        if exp.decision == "none":
            if found:
                fail(
                    "decision",
                    f"expected no touch of {exp.label}, got "
                    + "; ".join(o.describe() for o in found),
                )
            else:
                results.coverage.rules.add(exp.rule)
                results.lines.append((exp.where, case.name, f"{exp.label}: no touch, as expected"))
            return
        if not found:
            others = sorted(
                {o.rule_id for o in observed if o.customer_id == exp.customer} - {exp.rule}
            )
            hint = f" (touches of {exp.customer} that day: {', '.join(others)})" if others else ""
            fail(
                "rule",
                f"expected {exp.label}: {exp.decision or 'a touch'}, got no touch{hint}",
            )
            return
        if len(found) > 1:
            subjects = ", ".join(o.subject_id for o in found)
            fail("rule", f"{exp.label} names {len(found)} touches ({subjects}): add `subject:`")
            return
        obs = found[0]
        results.coverage.rules.add(obs.rule_id)
        before = len(results.failures)
        _compare(fail, "decision", exp.decision, obs.decision, obs)
        if exp.reason is not None:
            _compare(fail, "reason", exp.reason, obs.reason, obs)
        _compare(fail, "channel", exp.channel, obs.channel, obs)
        _compare(fail, "status", exp.status, obs.status, obs)
        _compare(fail, "variant", exp.variant, obs.variant, obs)
        if exp.send_at is not None:
            local = obs.send_at.astimezone(ZoneInfo(obs.timezone))
            got = local.strftime("%Y-%m-%dT%H:%M" if "T" in exp.send_at else "%H:%M")
            if got != exp.send_at:
                fail("send_at", f"expected send_at {exp.send_at}, got {got} ({obs.timezone})")
        if _needs_text(exp):
            self._check_text(case, exp, obs, fail, results)
        if len(results.failures) == before:
            line = f"{exp.label}: {obs.describe()}"
            if obs.channel == Channel.SMS.value and obs.body is not None:
                # What the carrier will bill: segments, and the cost where the policy prices one.
                line += f"; sms: {describe(sms_size(obs.body), self.ruleset.policy.sms_pricing)}"
            results.lines.append((exp.where, case.name, line))

    def _check_text(
        self,
        case: Case,
        exp: Expectation,
        obs: Observed,
        fail: Callable[[str, str], None],
        results: Results,
    ) -> None:
        if obs.render_error is not None:
            fail("rule", f"{exp.label}: the message does not render: {obs.render_error}")
            return
        text = obs.text
        if text is None:
            why = "suppressed, nothing rendered" if obs.decision == "suppress" else "not sent"
            fail("rule", f"{exp.label}: expected a message to read, got none ({why})")
            return
        if obs.template and obs.channel:
            results.coverage.templates.add((obs.template, obs.channel, obs.locale))
        for needle in exp.contains:
            if needle not in text:
                fail("contains", f"expected the message to contain {needle!r}, got:\n{text}")
        for needle in exp.not_contains:
            if needle in text:
                fail("not_contains", f"expected the message not to contain {needle!r}")
        if obs.channel == Channel.SMS.value and obs.body is not None:
            size = sms_size(obs.body)
            if exp.sms_segments is not None and size.segments != exp.sms_segments:
                fail("sms_segments", f"expected {exp.sms_segments} SMS segment(s), got {size}")
            if exp.sms_encoding is not None and size.encoding != exp.sms_encoding:
                fail("sms_encoding", f"expected {exp.sms_encoding}, got {size}")
        elif exp.sms_segments is not None or exp.sms_encoding is not None:
            fail("channel", f"sms_segments/sms_encoding are about an SMS; got {obs.channel}")
        if exp.snapshot and obs.channel is not None:
            self._check_snapshot(case, exp, obs, text, fail, results)

    def _check_snapshot(
        self,
        case: Case,
        exp: Expectation,
        obs: Observed,
        text: str,
        fail: Callable[[str, str], None],
        results: Results,
    ) -> None:
        assert obs.channel is not None
        path = snapshot_path(case, exp, obs.channel, obs.locale)
        wanted = text + "\n"
        if self.update_snapshots:
            if not path.is_file() or path.read_text(encoding="utf-8") != wanted:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(wanted, encoding="utf-8")
                results.snapshots_written.append(path)
            return
        if not path.is_file():
            fail("snapshot", f"no snapshot {path}: run `care test --update-snapshots` to write it")
            return
        kept = path.read_text(encoding="utf-8")
        if kept != wanted:
            diff = difflib.unified_diff(
                kept.splitlines(), wanted.splitlines(), str(path), "rendered", lineterm=""
            )
            fail("snapshot", "the message differs from its snapshot:\n" + "\n".join(diff))


def _needs_text(exp: Expectation) -> bool:
    return exp.checks_text or exp.sms_segments is not None or exp.sms_encoding is not None


def _matches(exp: Expectation, obs: Observed) -> bool:
    return (
        obs.rule_id == exp.rule
        and (exp.customer is None or obs.customer_id == exp.customer)
        and (exp.subject is None or obs.subject_id == exp.subject)
    )


def _compare(
    fail: Callable[[str, str], None], key: str, wanted: Any, got: Any, obs: Observed
) -> None:
    if wanted is not None and wanted != got:
        fail(key, f"expected {key} {wanted}, got {got} ({obs.describe()})")


def _rule_templates(rule: Rule, channel: Channel) -> list[str]:
    """Every template a rule's touches may render on ``channel`` (each variant's)."""
    if channel is Channel.AGENT_TASK and rule.task is not None:
        return [rule.task.brief]
    return [v.template for v in rule.variants] or [rule.template]


def _observed(touch: Touch) -> Observed:
    return Observed(
        rule_id=touch.rule.id,
        customer_id=touch.customer_id,
        subject_id=touch.subject_id,
        decision=touch.decision.value,
        reason=touch.reason.value if touch.decision is Decision.SUPPRESS and touch.reason else None,
        channel=touch.channel.value if touch.channel else None,
        send_at=touch.send_at,
        timezone=touch.timezone,
        locale=touch.locale,
        template=touch.template_on(touch.channel) if touch.channel else None,
        variant=touch.variant.id if touch.variant is not None else None,
    )


def uncovered(ruleset: RuleSet, templates: TemplateStore, coverage: Coverage) -> list[str]:
    """The rules no test exercised, and each template (per channel and locale) of a rule
    whose text no test checked: ``care test --coverage``."""
    lines = [
        f"rule {r.id} ({r.source}): no test" for r in ruleset.rules if r.id not in coverage.rules
    ]
    seen: set[tuple[str, str, str]] = set()
    for rule in ruleset.rules:
        for channel, template in (
            (ch, t) for ch in rule.channels for t in _rule_templates(rule, ch)
        ):
            for locale in _locales(templates, template, channel):
                key = (template, channel.value, locale)
                if key in seen or key in coverage.templates:
                    continue
                seen.add(key)
                where = templates.relpath(template, channel, locale, "*")
                lines.append(
                    f"template {templates.root.name}/{where} ({locale}): text not checked by any "
                    f"test (rule {rule.id})"
                )
    return lines


def _locales(templates: TemplateStore, template: str, channel: Channel) -> list[str]:
    from ..vocab import Locale

    return [
        loc.value
        for loc in Locale
        if all(p.is_file() for p in templates.paths(template, channel, loc.value))
    ]


__all__ = ["FixtureRunner", "Results", "fixture_files", "uncovered"]
