"""Every opt-out instruction our own templates give works: texted back through the signed
Twilio inbound webhook, in any case, full-width or with punctuation around it, it withdraws
SMS consent.

The instructions are read from the shipped template files, so a template that advertises a
new word (or phrases its instruction in a new way) fails here until the word is accepted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from webhook_helpers import client as make_client
from webhook_helpers import consent, counts, new_keys, provider_events, sms_only, twilio_post

from caretouch.store.db import Store
from caretouch.webhooks.keywords import keyword, mentions_opt_out
from conftest import TEMPLATES_DIR, load_rows

# "回T退订", "回复TD退订", "回覆 T 退訂", "发送TD取消": the word between the verb and the action.
_ZH = re.compile(
    r"(?:回复|回覆|回|发送|發送)\s*[「“\"']?([^\s「」“”\"'，。！]+?)[」”\"']?\s*(?:即可)?(?:退订|退訂|取消)"
)
# "Reply STOP to opt out", "Text END to unsubscribe".
_EN = re.compile(
    r"(?:reply|text|send)\s+[\"'“]?([A-Za-z]+)[\"'”]?\s+to\s+(?:opt[ -]?out|unsubscribe|stop)",
    re.IGNORECASE,
)
# An SMS template saying any of this must give an instruction the regexes above can read.
_MENTIONS_OPT_OUT = re.compile(
    r"退订|退訂|取消订阅|取消訂閱|opt[ -]?out|unsubscribe|\bSTOP\b", re.IGNORECASE
)


def _shipped_sms_templates() -> list[Path]:
    # Rule and campaign templates alike live under templates/<id>/sms.<locale>.txt.
    return sorted(TEMPLATES_DIR.glob("*/sms.*.txt"))


def _instructions() -> list[tuple[str, str]]:
    """(template, word) for every opt-out instruction in a shipped SMS template."""
    found = []
    for path in _shipped_sms_templates():
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(TEMPLATES_DIR))
        found += [(name, word) for word in _ZH.findall(text) + _EN.findall(text)]
    return found


def test_every_template_mentioning_opt_out_gives_a_readable_instruction() -> None:
    # Otherwise a template phrasing it a new way ("发短信N取消") would escape the tests below.
    read = {name for name, _ in INSTRUCTIONS}
    unread = [
        str(path.relative_to(TEMPLATES_DIR))
        for path in _shipped_sms_templates()
        if _MENTIONS_OPT_OUT.search(path.read_text(encoding="utf-8"))
        and str(path.relative_to(TEMPLATES_DIR)) not in read
    ]
    assert unread == []


INSTRUCTIONS = _instructions()


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _as_customers_type_it(word: str) -> list[str]:
    """The ways a customer texts the word back."""
    return [
        word,
        word.lower(),
        word.upper(),
        _full_width(word),
        _full_width(word.lower()),
        f"  {word}。",
        f"{word.lower()}!",
        f"「{word}」",
    ]


def test_the_templates_advertise_opt_out_words() -> None:
    # The extraction must find them, or the tests below would prove nothing: 14 zh-CN/zh-TW
    # templates say 回T退订 / 回T退訂, 7 English ones say Reply STOP to opt out.
    by_locale: dict[str, set[str]] = {}
    for name, word in INSTRUCTIONS:
        by_locale.setdefault(name.split(".")[-2], set()).add(word)
    assert "T" in by_locale["zh-CN"] and "T" in by_locale["zh-TW"] and "STOP" in by_locale["en"]
    assert len([n for n, _ in INSTRUCTIONS if ".zh-" in n]) >= 14
    assert len([n for n, _ in INSTRUCTIONS if ".en." in n]) >= 7


@pytest.mark.parametrize(("template", "word"), INSTRUCTIONS)
def test_each_templates_instruction_withdraws_sms_consent(
    sqlite_store: Store, template: str, word: str
) -> None:
    typed = _as_customers_type_it(word)
    phones = [f"+85291{i:06d}" for i in range(len(typed))]
    load_rows(sqlite_store, customers=[sms_only(f"C{i}", phone=p) for i, p in enumerate(phones)])
    http = make_client(sqlite_store, new_keys())
    for i, (body, phone) in enumerate(zip(typed, phones, strict=True)):
        params = {"MessageSid": f"SM{i:032d}", "From": phone, "To": "+15005550006", "Body": body}
        assert twilio_post(http, "inbound", params).status_code == 200
    withdrawn = [body for i, body in enumerate(typed) if consent(sqlite_store, f"C{i}")["sms"]]
    assert withdrawn == [], f"{template}: these replies did not opt out: {withdrawn}"
    assert {e.provider_status for e in provider_events(sqlite_store)} == {"stop"}


def test_every_advertised_word_on_both_databases(store: Store) -> None:
    words = sorted({word for _, word in INSTRUCTIONS})
    phones = [f"+6591{i:06d}" for i in range(len(words))]
    load_rows(store, customers=[sms_only(f"C{i}", phone=p) for i, p in enumerate(phones)])
    http = make_client(store, new_keys())
    for i, (word, phone) in enumerate(zip(words, phones, strict=True)):
        params = {
            "MessageSid": f"SM{i:032d}",
            "From": phone,
            "To": "+15005550006",
            "Body": _full_width(word.lower()),
        }
        assert twilio_post(http, "inbound", params).status_code == 200
    assert [consent(store, f"C{i}")["sms"] for i in range(len(words))] == [False] * len(words)
    assert counts(store)["consent_events"] == len(words)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("T", "STOP"),
        ("ｔ", "STOP"),
        ("ＴＤ", "STOP"),
        ("T.D.", "STOP"),
        ("退訂", "STOP"),
        ("取消", "STOP"),
        ("取消订阅", "STOP"),
        ("T 退订", "STOP"),  # only opt-out words
        ("TD退订", "STOP"),
        ("STOP ALL", "STOP"),
        ("opt-out", "STOP"),
        ("ＳＴＯＰ。", "STOP"),
        ("\u3000Ｓｔａｒｔ\u3000", "START"),
        ("ＹＥＳ", "START"),
        ("stop please", None),  # more than the keyword: Twilio's rule
        ("请退订", None),
        ("回T退订", None),
        ("don't", None),
        ("tend", None),  # not t + end: Latin letters are one word
        ("", None),
    ],
)
def test_keyword_normalisation(body: str, expected: str | None) -> None:
    assert keyword(body) == expected


def test_a_message_mentioning_an_opt_out_word_is_flagged_not_acted_on(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    load_rows(sqlite_store, customers=[sms_only()])
    http = make_client(sqlite_store, new_keys())
    bodies = ["请退订，谢谢", "please stop texting me", "好的，谢谢"]
    for i, body in enumerate(bodies):
        params = {"MessageSid": f"SM{i:032d}", "From": "+8613812348000", "Body": body}
        assert twilio_post(http, "inbound", params).status_code == 200
    assert consent(sqlite_store, "C1")["sms"] is True
    statuses = [e.provider_status for e in provider_events(sqlite_store)]
    assert statuses == ["possible-stop", "possible-stop", "message"]
    assert [mentions_opt_out(b) for b in bodies] == [True, True, False]
    assert caplog.text.count("mentions an opt-out word") == 2
    assert "8613812348000" not in caplog.text
