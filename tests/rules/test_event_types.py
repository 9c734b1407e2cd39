"""care_rules/events.yaml declares each event type and its payload fields, once; event rules,
their templates and the sample data `care validate` renders with are checked against it."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from caretouch.render.templates import TemplateStore
from caretouch.rules.event_types import EVENTS_FILE_SCHEMA, load_event_types
from caretouch.rules.loader import load_rules
from caretouch.vocab import Channel
from conftest import RULES_DIR, TEMPLATES_DIR

SHIPPED_EVENT_RULES = {
    "thank-you": "policy_purchased",
    "complaint-follow-up": "complaint_resolved",
    "claim-settled": "claim_settled",
    "retention-call": "churn_risk_high",
    "unsatisfied-call-back": "reply_unsatisfied",
    "customer-wrote": "reply_message",
    "complaint-acknowledge": "complaint_received",
    "complaint-call-back": "complaint_received",
    "complaint-escalation": "complaint_received",
    "complaint-reopened-call-back": "complaint_reopened",
}
# Declared types no shipped rule names yet (issue 16 adds their rules one by one).
NO_RULE_EVENT_TYPES = {
    "complaint_closed",
    "premium_paid",
    "reply_satisfied",
    "nps_recorded",
}


def test_the_shipped_declaration_covers_every_shipped_event_rule(shipped_rules) -> None:
    declared = shipped_rules.event_types
    # Every event a shipped rule names is declared; the declared types no rule names are the
    # ones that act on the store or the ledger only (a payment, a case closed, a reply).
    assert declared.available
    assert set(declared.types) - set(SHIPPED_EVENT_RULES.values()) <= NO_RULE_EVENT_TYPES
    assert set(SHIPPED_EVENT_RULES.values()) <= set(declared.types)
    for rule_id, event_type in SHIPPED_EVENT_RULES.items():
        assert shipped_rules.by_id(rule_id).trigger.event_type == event_type
    # Case numbers are required: a claim or complaint message always shows one.
    assert declared.types["claim_settled"].fields["claim_id"].required
    assert declared.types["complaint_resolved"].fields["case_id"].required


def test_the_published_events_schema_is_current() -> None:
    published = json.loads((RULES_DIR / "events.schema.json").read_text(encoding="utf-8"))
    assert published == EVENTS_FILE_SCHEMA, (
        "run `care schema --events > care_rules/events.schema.json`"
    )


@pytest.mark.parametrize(
    ("event_type", "template", "payload", "shown"),
    [
        ("claim_settled", "claim_settled", {"claim_id": "CL20261120001"}, "CL20261120001"),
        (
            "complaint_resolved",
            "complaint_follow_up",
            {"case_id": "CS20261120042"},
            "CS20261120042",
        ),
    ],
)
@pytest.mark.parametrize("channel", [Channel.SMS, Channel.EMAIL])
@pytest.mark.parametrize("locale", ["en", "zh-CN", "zh-TW"])
def test_case_numbers_sent_as_declared_appear_in_every_message(
    templates: TemplateStore,
    shipped_rules,
    event_type: str,
    template: str,
    payload: dict[str, str],
    shown: str,
    channel: Channel,
    locale: str,
) -> None:
    # The demo data and the declaration agree (tests/store/test_demo.py); here the templates do.
    assert shipped_rules.event_types.problems(event_type, payload) == []
    context = {
        "occurrence": dt.date(2026, 11, 23),
        "rule_id": "x",
        "customer": {"name": "王芳", "customer_id": "C1"},
        "policy": None,
        "event": {"event_id": "E1", "type": event_type, "payload": payload},
    }
    message = templates.render(template, channel, locale, context)
    assert shown in message.body
    assert message.html is None or shown in message.html


# --- rules and templates against the declaration --------------------------------------------


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    for name in ("policy.yaml", "events.yaml"):
        shutil.copy(RULES_DIR / name, d / name)
    return d


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    d = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, d)
    return d


def event_rule(event_type: str, template: str = "claim_settled") -> str:
    return (
        "version: 1\n"
        "rules:\n"
        "  - id: on-event\n"
        "    description: An event rule.\n"
        f"    trigger: {{kind: event, type: {event_type}, delay_days: 0}}\n"
        "    channels: [sms]\n"
        f"    template: {template}\n"
        "    category: service\n"
        "    priority: 50\n"
    )


def errors_for(rules_dir: Path, templates_dir: Path, text: str) -> list[str]:
    (rules_dir / "r.yaml").write_text(text, encoding="utf-8")
    return [str(e) for e in load_rules(rules_dir, TemplateStore(templates_dir)).errors]


def test_a_misspelt_event_type_is_refused_with_a_suggestion(
    rules_dir: Path, templates_dir: Path
) -> None:
    # The declared types are named in the file's order.
    declared = list(load_event_types(rules_dir)[0].types)
    assert declared[:3] == ["policy_purchased", "claim_settled", "complaint_received"]
    assert errors_for(rules_dir, templates_dir, event_rule("claim_setled")) == [
        f"{rules_dir / 'r.yaml'}:5:34: unknown event type 'claim_setled' (did you mean "
        f"'claim_settled'?); {rules_dir / 'events.yaml'} declares {', '.join(declared)}"
    ]
    assert errors_for(rules_dir, templates_dir, event_rule("claim_settled")) == []


def test_without_a_declaration_no_event_rule_loads(rules_dir: Path, templates_dir: Path) -> None:
    (rules_dir / "events.yaml").unlink()
    [error] = errors_for(rules_dir, templates_dir, event_rule("claim_settled"))
    assert error.startswith(f"{rules_dir / 'r.yaml'}:5:34: event type 'claim_settled' cannot be")
    assert "events.yaml is missing" in error


@pytest.mark.parametrize(
    "read",
    [
        "event.payload.claim_no",
        "event.payload['claim_no']",
        "event.payload.get('claim_no')",
    ],
)
def test_templates_may_only_read_declared_payload_fields(
    rules_dir: Path, templates_dir: Path, read: str
) -> None:
    sms = templates_dir / "claim_settled" / "sms.en.txt"
    sms.write_text(f"Claim\n{{% if event.payload %}}{{{{ {read} }}}}{{% endif %}}\n")
    errors = errors_for(rules_dir, templates_dir, event_rule("claim_settled"))
    assert errors == [
        f"{sms}:2: payload field 'claim_no' is not declared for claim_settled (did you mean "
        "event.payload.claim_id?); declared: claim_id, amount, currency (events.yaml)"
    ]


def test_validate_renders_with_the_declared_examples(rules_dir: Path, templates_dir: Path) -> None:
    sms = templates_dir / "claim_settled" / "sms.en.txt"
    # The example amount is a decimal: `money` formats it (it used to get "sample" and fail).
    sms.write_text(
        "Paid {% if event.payload.get('amount') %}{{ event.payload.amount | money }}{% endif %}"
        " on claim {{ event.payload.claim_id }}"
    )
    assert errors_for(rules_dir, templates_dir, event_rule("claim_settled")) == []
    # The currency is text: `money` refuses it, naming the line.
    sms.write_text("Paid\n{{ event.payload.currency | money }}")
    [error] = errors_for(rules_dir, templates_dir, event_rule("claim_settled"))
    assert error == (
        f"{sms}:2: cannot render: money expects a number, got text that is not one "
        "(with sample data: typical values)"
    )
    # An optional field is absent from the sample of empty optional fields: guard it.
    sms.write_text("Paid\n{{ event.payload.amount | money }}")
    [error] = errors_for(rules_dir, templates_dir, event_rule("claim_settled"))
    assert error.startswith(f"{sms}:2: cannot render: 'dict object' has no attribute 'amount'")
    assert error.endswith("(with sample data: empty optional fields)")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '        example: "12000.00"',
            "        example: lots",
            "events.yaml:40:18: example of claim_settled.amount must be a decimal number",
        ),
        (
            "        type: decimal",
            "        type: decimall",
            "events.yaml:17:15: 'decimall' is not one of",
        ),
        (
            "        required: true\n",
            "        requird: true\n",
            "events.yaml:34:9: unknown field 'requird'",
        ),
        (
            "  claim_settled:",
            "  Claim-Settled:",
            "events.yaml:29:3: 'Claim-Settled' has the wrong form (it must match",
        ),
    ],
)
def test_a_broken_declaration_is_refused_with_its_place(
    rules_dir: Path, templates_dir: Path, old: str, new: str, expected: str
) -> None:
    path = rules_dir / "events.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    types, errors = load_event_types(rules_dir)
    assert not types.available
    assert any(str(e).startswith(f"{rules_dir}/{expected}") for e in errors), errors
    # Event rules cannot be checked, so they are left out; the others load.
    (rules_dir / "b.yaml").write_text((RULES_DIR / "birthday.yaml").read_text("utf-8"))
    (rules_dir / "r.yaml").write_text(event_rule("claim_settled"), encoding="utf-8")
    ruleset = load_rules(rules_dir, TemplateStore(templates_dir))
    assert [r.id for r in ruleset.rules] == ["birthday"]
    assert (
        f"{rules_dir / 'r.yaml'}:5:34: event type 'claim_settled' cannot be checked: "
        in "\n".join(str(e) for e in ruleset.errors)
    )


@pytest.mark.parametrize(
    ("event_type", "payload", "problems"),
    [
        ("claim_settled", {"claim_id": "CL1", "amount": 12000, "currency": "CNY"}, []),
        ("claim_settled", {"claim_id": "CL1", "amount": "12000.00"}, []),
        ("policy_purchased", None, []),
        (
            "claim_setled",
            None,
            ["unknown event type 'claim_setled' (did you mean 'claim_settled'?)"],
        ),
        ("claim_settled", None, ["payload field 'claim_id' is required for claim_settled"]),
        ("claim_settled", {"claim_id": None}, ["payload field 'claim_id' is required for"]),
        (
            "claim_settled",
            {"claim_no": "CL1"},
            [
                "payload field 'claim_no' is not declared for claim_settled (did you mean "
                "'claim_id'?); declared: claim_id, amount, currency",
                "payload field 'claim_id' is required for claim_settled",
            ],
        ),
        (
            "claim_settled",
            {"claim_id": 7, "amount": "lots"},
            [
                "payload field 'claim_id' must be text, got int",
                "payload field 'amount' must be a decimal number (a JSON number or text such as "
                '"1234.50"), got text that is not one',
            ],
        ),
        (
            "claim_settled",
            {"claim_id": "C", "amount": True},
            ["payload field 'amount' must be a decimal"],
        ),
        (
            "claim_settled",
            {"claim_id": "C", "amount": "NaN"},
            ["payload field 'amount' must be a decimal"],
        ),
    ],
)
def test_the_check_every_intake_path_calls(
    shipped_rules, event_type: str, payload: dict | None, problems: list[str]
) -> None:
    found = shipped_rules.event_types.problems(event_type, payload)
    assert len(found) == len(problems), found
    for got, expected in zip(found, problems, strict=True):
        assert got.startswith(expected), (got, expected)
