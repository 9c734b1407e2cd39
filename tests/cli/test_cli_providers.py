"""`care run` with provider credentials in the environment sends for real (to the simulator)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from caretouch.ledger import Ledger
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.vocab import TouchStatus
from conftest import Care, customer_row, load_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provider_sim import (
    SENDGRID_API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    ProviderSim,
)

DAY = dt.date(2026, 11, 23)
NOW = "2026-11-23T04:00:00Z"  # 12:00 in Shanghai: the birthday touches (09:00 local) are due


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(
        store,
        customers=[
            customer_row("C1"),  # SMS first (birthday prefers sms)
            customer_row("C2", phone="", email="li.na@example.com", name="李娜"),  # email only
            customer_row("C3", phone="+8613800000003"),  # Twilio says: unsubscribed (21610)
        ],
    )
    store.dispose()
    return tmp_path


def provider_env(sim: ProviderSim) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
        "CARE_SMS_FROM": "+15005550006",
        "CARE_TWILIO_API_BASE": sim.url,
        "SENDGRID_API_KEY": SENDGRID_API_KEY,
        "CARE_EMAIL_FROM": "care@example.com",
        "CARE_SENDGRID_API_BASE": sim.url,
        "CARE_PUBLIC_URL": "https://care.example.com",
        "CARE_UNSUBSCRIBE_KEY": "an-unsubscribe-key-for-tests-only",
    }


def test_care_run_sends_through_twilio_and_sendgrid(care: Care, store_dir: Path) -> None:
    with ProviderSim(twilio_recipient_errors={"+8613800000003": 21610}) as sim:
        result = care("run", "--date", "2026-11-23", "--now", NOW, env=provider_env(sim))
        accepted = sim.accepted()
    assert "sms via twilio" in result.output and "email via sendgrid" in result.output
    assert result.exit_code == 3, result.output  # C3's touch failed: a partial failure
    assert sorted(m.provider for m in accepted) == ["sendgrid", "twilio"]
    sms = next(m for m in accepted if m.provider == "twilio")
    email = next(m for m in accepted if m.provider == "sendgrid")
    assert sms.to == "+8613812348000" and "王芳" in (sms.body or "")
    assert email.to == "li.na@example.com"
    assert "/care/hooks/unsubscribe?t=" in (email.text or "")

    store = open_store(f"sqlite:///{store_dir / 'care.db'}")
    ledger = Ledger(store)
    states = {s.row.customer_id: s for s in ledger.states_for_day(DAY)}
    assert states["C1"].status is TouchStatus.SENT
    assert states["C2"].status is TouchStatus.SENT
    assert states["C3"].status is TouchStatus.FAILED and states["C3"].reason == "opted_out"
    sent_ids = {
        e.provider_message_id for e in ledger.history(states["C1"].id) if e.provider_message_id
    }
    assert sent_ids == {sms.id}
    # 21610 withdrew C3's SMS consent: the next plan does not text C3 again.
    from caretouch.store.consent import consent_history

    history = consent_history(store, "C3")
    assert [(e.purpose, e.granted, e.source) for e in history][-1] == (
        "sms",
        False,
        "provider:twilio",
    )
    store.dispose()


def test_refused_credentials_stop_the_run_and_fail_nothing(care: Care, store_dir: Path) -> None:
    with ProviderSim(twilio_auth_token="another-token") as sim:
        env = provider_env(sim)
        del env["SENDGRID_API_KEY"], env["CARE_EMAIL_FROM"]  # email through the outbox
        result = care("run", "--date", "2026-11-23", "--now", NOW, env=env)
        assert sim.accepted("twilio") == []
    assert result.exit_code == 1, result.output
    assert "Twilio refused the credentials" in result.output
    assert TWILIO_AUTH_TOKEN not in result.output
    store = open_store(f"sqlite:///{store_dir / 'care.db'}")
    states = Ledger(store).states_for_day(DAY)
    assert TouchStatus.FAILED not in {s.status for s in states}
    store.dispose()


def test_half_configured_provider_is_a_clear_error(care: Care, store_dir: Path) -> None:
    result = care(
        *("run", "--date", "2026-11-23", "--now", NOW),
        env={"TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "x"},
    )
    assert result.exit_code == 1
    assert "Twilio is half configured: set $CARE_SMS_FROM" in result.output
    assert "x" not in result.output.split("$CARE_SMS_FROM")[0].split("half configured")[1]


def test_an_unreachable_rate_limiter_stops_the_run_and_sends_nothing(
    care: Care, store_dir: Path
) -> None:
    """With CARE_RATE_LIMIT_URL set and its Redis down, nothing goes out unlimited: the run
    stops naming the URL (not its password) and the touches wait in ``planned``."""
    with ProviderSim() as sim:
        env = provider_env(sim)
        del env["SENDGRID_API_KEY"], env["CARE_EMAIL_FROM"]  # email through the outbox
        env["CARE_RATE_LIMIT_URL"] = "redis://:hunter2-not-shown@127.0.0.1:1/5"
        result = care("run", "--date", "2026-11-23", "--now", NOW, env=env)
        assert sim.accepted("twilio") == []
        assert sim.request_counts("twilio")["sends"] == 0
    assert result.exit_code == 1, result.output
    assert "sms via twilio (10/s shared, 4 at once)" in result.output
    assert "error: the shared rate limiter (CARE_RATE_LIMIT_URL redis://:***@127.0.0.1:1/5)" in (
        result.output
    )
    assert "hunter2" not in result.output
    store = open_store(f"sqlite:///{store_dir / 'care.db'}")
    states = {s.row.customer_id: s for s in Ledger(store).states_for_day(DAY)}
    assert states["C1"].status is TouchStatus.PLANNED and states["C1"].reason == "retry"
    assert states["C3"].status is TouchStatus.PLANNED
    assert TouchStatus.SENDING not in {s.status for s in states.values()}
    store.dispose()
