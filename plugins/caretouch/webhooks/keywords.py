"""Opt-out and opt-in keywords of inbound SMS (``STOP``, ``退订``, ``START``), normalised.

Used by ``webhooks.twilio`` for inbound messages; no I/O.
"""

from __future__ import annotations

import re
import unicodedata

# Opt-out words: Twilio's Advanced Opt-Out defaults; what our own templates advertise ("回T退订":
# T); and what subscribers in China, Hong Kong and Taiwan send (TD, 退订 / 退訂, 取消, 取消订阅 /
# 取消訂閱). tests/webhooks/test_optout_words.py fails when a template advertises a word that is
# not here. Compared after normalising (``normalise_keyword``): ＴＤ, td and "T.D." are TD.
STOP_WORDS = frozenset(
    w.casefold()
    for w in (
        {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
        | {"T", "TD", "退订", "退訂", "取消", "取消订阅", "取消訂閱"}
    )
)
START_WORDS = frozenset(w.casefold() for w in ("START", "UNSTOP", "YES"))
# Twilio: the message was not sent because the recipient had replied STOP.


def _is_separator(ch: str) -> bool:
    # Punctuation, spaces, symbols (emoji included) and control characters.
    return unicodedata.category(ch)[0] in "PZSC"


def _words(text: str) -> list[str]:
    """``text`` cut at separators and where Latin letters or digits meet other scripts:
    ``"t退订"`` -> ``["t", "退订"]``."""
    squashed = "".join(" " if _is_separator(ch) else ch for ch in text)
    return re.findall(r"[a-z0-9]+|[^a-z0-9 ]+", squashed)


def normalise_keyword(body: str | None) -> str:
    """The message as keywords are compared: Unicode NFKC (full-width ``ＳＴＯＰ`` and ``Ｔ`` become
    ``STOP`` and ``T``), case-folded, every separator removed (``"Stop."``, ``"T.D."``,
    ``"opt-out"``, ``"STOP ALL"`` are ``stop``, ``td``, ``optout``, ``stopall``)."""
    text = unicodedata.normalize("NFKC", body or "").casefold()
    return "".join(ch for ch in text if not _is_separator(ch))


def keyword(body: str | None) -> str | None:
    """``"STOP"`` / ``"START"`` when an inbound SMS is an opt-out or opt-in keyword.

    As Twilio does, the whole message must be the keyword (normalised, see
    ``normalise_keyword``); a message made only of opt-out words (``"T 退订"``, ``"TD退订"``) is
    an opt-out too. Anything more ("stop please", "请退订") is not: see ``mentions_opt_out``.
    """
    word = normalise_keyword(body)
    if word in STOP_WORDS:
        return "STOP"
    if word in START_WORDS:
        return "START"
    parts = _words(unicodedata.normalize("NFKC", body or "").casefold())
    if parts and all(p in STOP_WORDS for p in parts):
        return "STOP"
    return None


def mentions_opt_out(body: str | None) -> bool:
    """True when a message that is not a keyword still contains an opt-out word of two or more
    letters ("stop please", "请退订", "退订谢谢"): kept for a person to review, consent unchanged."""
    text = unicodedata.normalize("NFKC", body or "").casefold()
    parts = _words(text)
    squashed = normalise_keyword(body)
    return any(
        len(word) > 1 and (word in parts if word.isascii() else word in squashed)
        for word in STOP_WORDS
    )
