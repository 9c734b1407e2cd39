"""``care test``: rule fixtures run on a scratch store; failures and fixture errors name the
file and line; snapshots, coverage and the pytest plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import RULES_DIR, TEMPLATES_DIR, Care

PASSING = """\
version: 1
tests:
  - name: a birthday greeting by SMS at nine
    date: 2027-06-15
    customers:
      - {customer_id: C1, birth_date: 1980-06-15}
    expect:
      - rule: birthday
        decision: send
        channel: sms
        send_at: "09:00"
        contains: ["生日快乐"]
        sms_encoding: UCS-2
        sms_segments: 1
  - name: a leap-day birthday on 28 February of a common year
    date: 2027-02-28
    customers:
      - {customer_id: C1, birth_date: 1988-02-29, tier: B, locale: en}
    expect:
      - rule: birthday
        decision: send
        contains: ["Happy birthday"]
  - name: the day's thank-you already went out, so the birthday waits for the cap
    date: 2027-06-15
    customers:
      - {customer_id: C1, birth_date: 1980-06-15}
    events:
      - {event_id: E1, customer_id: C1, type: policy_purchased,
         occurred_at: "2027-06-14T10:00:00+08:00"}
    history:
      - {rule: thank-you, customer: C1, date: 2027-06-15}
    expect:
      - rule: birthday
        decision: suppress
        reason: frequency_cap
      - rule: thank-you
        decision: suppress
        reason: already_sent
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A copy of the shipped rules (without their own fixtures), to write fixtures beside."""
    copy = tmp_path / "care_rules"
    shutil.copytree(RULES_DIR, copy, ignore=shutil.ignore_patterns("tests"))
    (copy / "tests").mkdir()
    return copy


def write(rules: Path, text: str, name: str = "cases.yaml") -> Path:
    path = rules / "tests" / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_passing_fixtures_exit_zero_and_say_what_they_checked(care: Care, rules: Path) -> None:
    write(rules, PASSING)
    result = care("test", "-v", rules=rules)
    assert result.exit_code == 0, result.output
    assert "3 test(s), 4 expectation(s) in 1 file(s): 4 met, 0 failed" in result.output
    assert "birthday for C1: suppress (frequency_cap) on sms at 2027-06-15 09:00 local" in (
        result.output
    )
    # What the carrier will bill, shown for each SMS an expectation names.
    assert "send on sms at 2027-06-15 09:00 local; sms: 1 segment(s), " in result.output


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("decision", "suppress", "expected decision suppress, got send"),
        ("channel", "email", "expected channel email, got sms"),
        ("send_at", '"10:00"', "expected send_at 10:00, got 09:00 (Asia/Shanghai)"),
        ("contains", '["圣诞快乐"]', "expected the message to contain '圣诞快乐'"),
        ("not_contains", '["生日"]', "expected the message not to contain '生日'"),
        ("sms_segments", "2", "expected 2 SMS segment(s), got 1 segment(s)"),
        ("sms_encoding", "GSM-7", "expected GSM-7, got 1 segment(s)"),
    ],
)
def test_a_wrong_expectation_fails_at_its_line(
    care: Care, rules: Path, key: str, value: str, message: str
) -> None:
    path = write(
        rules,
        f"""\
        version: 1
        tests:
          - name: birthday
            date: 2027-06-15
            customers: [{{customer_id: C1, birth_date: 1980-06-15}}]
            expect:
              - rule: birthday
                {key}: {value}
        """,
    )
    result = care("test", rules=rules)
    assert result.exit_code == 1
    assert f"FAIL {path}:8:" in result.output
    assert message in result.output
    assert "1 expectation(s) in 1 file(s): 0 met, 1 failed" in result.output


def test_no_touch_and_unexpected_touches_fail(care: Care, rules: Path) -> None:
    path = write(
        rules,
        """\
        version: 1
        tests:
          - name: not her birthday
            date: 2027-06-16
            customers: [{customer_id: C1, birth_date: 1980-06-15}]
            expect:
              - rule: birthday
                decision: send
          - name: exhaustive
            date: 2027-06-15
            exhaustive: true
            customers: [{customer_id: C1, birth_date: 1980-06-15}]
            expect:
              - rule: thank-you
                decision: none
          - name: none where there is one
            date: 2027-06-15
            customers: [{customer_id: C1, birth_date: 1980-06-15}]
            expect:
              - rule: birthday
                decision: none
        """,
    )
    result = care("test", rules=rules)
    assert result.exit_code == 1
    assert f"{path}:7:" in result.output
    assert "expected birthday for C1: send, got no touch" in result.output
    assert f"{path}:9:" in result.output
    assert "unexpected touch birthday for C1 (C1): send on sms" in result.output
    assert f"{path}:21:" in result.output
    assert "expected no touch of birthday for C1, got send on sms" in result.output


def test_fixture_errors_name_file_line_and_column(care: Care, rules: Path) -> None:
    path = write(
        rules,
        """\
        version: 1
        tests:
          - name: errors
            date: 2027-13-01
            customers: [{customer_id: C1, birth_dat: 1980-06-15}]
            expect:
              - {rule: birthdy, reason: too_busy}
          - name: status needs now
            date: 2027-06-15
            customers: [{customer_id: C1}]
            expect:
              - {rule: birthday, status: sent}
          - name: a customer row the importer refuses
            date: 2027-06-15
            customers: [{customer_id: C1, tier: Z}]
            events:
              - {event_id: E1, customer_id: C9, type: policy_purchased,
                 occurred_at: "2027-06-14T10:00:00+08:00"}
            expect:
              - {rule: birthday}
          - name: fine
            date: 2027-06-15
            customers: [{customer_id: C1, birth_date: 1980-06-15}]
            expect:
              - {rule: birthday, decision: send}
        """,
    )
    result = care("test", rules=rules)
    assert result.exit_code == 1
    err = result.output
    assert f"error: {path}:5:" in err and "birth_dat" in err
    assert f"error: {path}:7:" in err and "too_busy" in err
    assert f"error: {path}:12:" in err and "give the test `now:`" in err
    assert f"error: {path}:15:" in err and "customer row refused" in err
    # The broken tests are left out; the good one still runs.
    assert "1 test(s), 1 expectation(s) in 1 file(s): 1 met, 0 failed, " in err


def test_unknown_rule_and_bad_date_are_errors_with_a_hint(care: Care, rules: Path) -> None:
    path = write(
        rules,
        """\
        version: 1
        tests:
          - name: errors
            date: 2027-02-30
            customers: [{customer_id: C1}]
            expect:
              - {rule: birthdy}
        """,
    )
    result = care("test", rules=rules)
    assert result.exit_code == 1
    assert f"{path}:4:" in result.output and "'2027-02-30' is not a date" in result.output
    assert f"{path}:7:" in result.output and "did you mean 'birthday'" in result.output


def test_snapshots_are_written_then_held(care: Care, rules: Path, tmp_path: Path) -> None:
    fixture = """\
        version: 1
        tests:
          - name: Birthday snapshot
            date: 2027-06-15
            customers: [{customer_id: C1, birth_date: 1980-06-15, locale: en}]
            expect:
              - {rule: birthday, channel: sms, snapshot: true}
        """
    write(rules, fixture)
    missing = care("test", rules=rules)
    assert missing.exit_code == 1 and "run `care test --update-snapshots`" in missing.output
    written = care("test", "--update-snapshots", rules=rules)
    assert written.exit_code == 0, written.output
    snap = rules / "tests/__snapshots__/cases/birthday-snapshot--birthday--C1.sms.en.txt"
    assert snap.is_file() and "birthday" in snap.read_text(encoding="utf-8").lower()
    assert care("test", rules=rules).exit_code == 0
    # The template changes: the snapshot no longer matches, and the diff says how.
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    sms = templates / "birthday/sms.en.txt"
    sms.write_text(sms.read_text(encoding="utf-8").replace("good health", "GOOD HEALTH"))
    changed = care("test", rules=rules, templates=templates)
    assert changed.exit_code == 1
    assert "the message differs from its snapshot" in changed.output
    assert "+" in changed.output and "GOOD HEALTH" in changed.output


def test_coverage_lists_what_no_test_exercises(care: Care, rules: Path) -> None:
    write(rules, PASSING)
    result = care("test", "--coverage", rules=rules)
    assert result.exit_code == 0
    out = result.output
    assert "rule birthday (" not in out  # exercised
    assert "rule renewal-reminder (" in out and ": no test" in out
    # Birthday SMS text was checked in zh-CN and en, not in zh-TW, nor any email.
    assert "templates/birthday/sms.zh-CN.* (zh-CN)" not in out
    assert "templates/birthday/sms.en.* (en)" not in out
    assert "templates/birthday/sms.zh-TW.* (zh-TW)" in out
    assert "templates/birthday/email.en.* (en)" in out


def test_now_runs_the_send_step_at_that_instant(care: Care, rules: Path) -> None:
    write(
        rules,
        """\
        version: 1
        tests:
          - name: a complaint at night waits for the morning
            now: 2027-06-15T22:30:00+08:00
            customers: [{customer_id: C1}]
            events:
              - {event_id: E1, customer_id: C1, type: complaint_received,
                 occurred_at: "2027-06-15T22:20:00+08:00", payload: {case_id: K1}}
            expect:
              - {rule: complaint-acknowledge, status: planned, decision: send}
          - name: in the morning it goes out through the outbox
            now: 2027-06-15T10:00:00+08:00
            customers: [{customer_id: C1}]
            events:
              - {event_id: E1, customer_id: C1, type: complaint_received,
                 occurred_at: "2027-06-15T08:20:00+08:00", payload: {case_id: K1}}
            expect:
              - {rule: complaint-acknowledge, status: sent, channel: sms, contains: [K1]}
          - name: the wrong status fails
            now: 2027-06-15T10:00:00+08:00
            customers: [{customer_id: C1}]
            events:
              - {event_id: E1, customer_id: C1, type: complaint_received,
                 occurred_at: "2027-06-15T08:20:00+08:00", payload: {case_id: K1}}
            expect:
              - {rule: complaint-acknowledge, status: planned}
        """,
    )
    result = care("test", rules=rules)
    assert "3 test(s), 3 expectation(s) in 1 file(s): 2 met, 1 failed" in result.output
    assert "expected status planned, got sent" in result.output


def test_consent_withdrawn_before_the_day(care: Care, rules: Path) -> None:
    write(
        rules,
        """\
        version: 1
        tests:
          - name: opted out of SMS, greeted by email
            date: 2027-06-15
            customers: [{customer_id: C1, birth_date: 1980-06-15}]
            consents: [{customer: C1, channel: sms, at: "2027-06-01T10:00:00+08:00"}]
            expect:
              - {rule: birthday, decision: send, channel: email, contains: ["生日"]}
          - name: opted out of both
            date: 2027-06-15
            customers: [{customer_id: C1, birth_date: 1980-06-15}]
            consents:
              - {customer: C1, channel: sms, at: "2027-06-01T10:00:00+08:00"}
              - {customer: C1, channel: email, at: "2027-06-01T10:00:00+08:00"}
            expect:
              - {rule: birthday, decision: suppress, reason: opted_out}
        """,
    )
    result = care("test", rules=rules)
    assert result.exit_code == 0, result.output


def test_the_pytest_plugin_runs_fixtures_as_tests(rules: Path, tmp_path: Path) -> None:
    write(rules, PASSING)
    write(
        rules,
        """\
        version: 1
        tests:
          - name: wrong on purpose
            date: 2027-06-15
            customers: [{customer_id: C1, birth_date: 1980-06-15}]
            expect:
              - {rule: birthday, channel: email}
        """,
        name="wrong.yaml",
    )
    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARE_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(rules / "tests")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed, 3 passed" in out
    assert "wrong.yaml:7:" in out and "expected channel email, got sms" in out


def test_a_variant_is_expected_and_its_template_rendered(care: Care, tmp_path: Path) -> None:
    from variants_env import variant_rules, variant_templates

    from caretouch.render.templates import TemplateStore
    from caretouch.rules.loader import load_rules

    rules, templates = variant_rules(tmp_path, channels="sms"), variant_templates(tmp_path)
    rule = load_rules(rules, TemplateStore(templates)).by_id("birthday-ab")
    given = rule.variant_for("C1").id
    other = next(v.id for v in rule.variants if v.id != given)
    text = {"short": "生日快乐！回T退订", "warm": "阖家幸福"}
    (rules / "tests").mkdir()
    path = write(
        rules,
        f"""\
        version: 1
        tests:
          - name: the customer's variant
            date: 2027-06-15
            customers: [{{customer_id: C1, birth_date: 1980-06-15}}]
            expect:
              - {{rule: birthday-ab, variant: {given}, contains: ["{text[given]}"]}}
          - name: the other variant
            date: 2027-06-15
            customers: [{{customer_id: C1, birth_date: 1980-06-15}}]
            expect:
              - {{rule: birthday-ab, variant: {other}}}
        """,
    )
    result = care("test", "--coverage", rules=rules, templates=templates)
    assert result.exit_code == 1
    assert f"{path}:12:" in result.output
    assert f"expected variant {other}, got {given}" in result.output
    assert "2 expectation(s) in 1 file(s): 1 met, 1 failed" in result.output
    # The variant checked is covered; the other one's template is not.
    shown = {"short": "birthday_short", "warm": "birthday"}
    assert f"templates/{shown[other]}/sms.zh-CN.* (zh-CN)" in result.output
    assert f"templates/{shown[given]}/sms.zh-CN.* (zh-CN)" not in result.output


def test_verbose_shows_the_cost_of_each_sms_where_the_policy_prices_it(
    care: Care, rules: Path
) -> None:
    policy = rules / "policy.yaml"
    text = policy.read_text(encoding="utf-8")
    assert "\nsms:" not in text  # the shipped policy prices nothing
    policy.write_text(
        text + "\nsms:\n  cost_per_segment: 0.0079\n  currency: USD\n", encoding="utf-8"
    )
    write(rules, PASSING)
    result = care("test", "-v", rules=rules)
    assert result.exit_code == 0, result.output
    assert "sms: 1 segment(s), " in result.output
    assert "in UCS-2, est. cost 0.0079 USD" in result.output
