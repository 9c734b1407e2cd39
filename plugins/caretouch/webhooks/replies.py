"""Customers' replies: what an inbound SMS (or email) that is not a STOP/START keyword says,
which touch it answers, and the business events it becomes.

- ``read_reply`` (no I/O): a satisfaction score (``1``-``5``, ``满意``, ``不满意``, ``Y``, ``N``,
  full-width forms too) or a message for the agent. A number outside 1-5 is no score: it is a
  message, recorded as ``out-of-range``.
- ``hear_reply``: the touch it answers (the latest sent to that customer on that channel and
  address within the reply window, ``ledger.replies.answered_touch``) and the events for the
  inbox: ``reply_satisfied`` / ``reply_unsatisfied`` (score, touch, rule, complaint case),
  ``reply_message`` (the text, for the agent's "customer wrote" task), and
  ``complaint_reopened`` when an unsatisfied answer is about a complaint's touch.

The events are submitted to the inbox by the caller's ``ReplyIntake`` (the web layer owns the
inbox: webhooks sit beside ``events`` and do not import it) *before* the provider event is
recorded, as consent changes are (``recording``): a crash in between leaves the provider event
unrecorded, the provider retries, and the events, keyed by the message's id, are not doubled.

The text a customer wrote is never logged; the ledger's copy of the provider's payload is
masked (``recording.masked``); in clear it is only in the ``reply_message`` event's payload,
for the agent's brief.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ..ledger.replies import REPLY_KEY, AnsweredTouch, answered_touch
from ..mask import mask_recipient
from ..store.db import Store
from ..store.models import Event
from ..vocab import ReplyKind

log = logging.getLogger("caretouch.webhooks")

MIN_SCORE, MAX_SCORE = 1, 5
# The reply window when none is given (``CARE_REPLY_WINDOW_DAYS``'s default).
DEFAULT_REPLY_WINDOW = dt.timedelta(days=7)
# 4-5 is satisfied; 1-3 is not: a "3" gets a call (service practice: a middling answer is
# where a call changes most).
SATISFIED_FROM = 4
# What of a message goes to the agent's brief (an SMS is at most 1,600 characters; an
# email's first part is cut there too).
MAX_TEXT = 2000
# A whole number this long or shorter that is not 1-5 is taken for a score out of range;
# longer numbers (a policy or phone number) are messages.
_SCORE_DIGITS = 3

SATISFIED_WORDS = frozenset({"满意", "很满意", "非常满意", "滿意", "很滿意", "非常滿意", "y"})
UNSATISFIED_WORDS = frozenset(
    {"不满意", "很不满意", "非常不满意", "不滿意", "很不滿意", "非常不滿意", "n"}
)
_NUMBER = re.compile(r"([+-]?)(\d+(?:\.\d+)?)(分)?(.*)", re.DOTALL)


class ReplyStatus:
    """The ``provider_status`` an inbound reply is recorded with (besides ``stop``,
    ``start`` and ``possible-stop`` of ``webhooks.twilio``)."""

    SATISFIED = ReplyKind.SATISFIED.value
    UNSATISFIED = ReplyKind.UNSATISFIED.value
    MESSAGE = ReplyKind.MESSAGE.value
    OUT_OF_RANGE = "out-of-range"


@dataclass(frozen=True)
class ReadReply:
    """What a reply says: its kind, its score (1-5, for a satisfaction answer) and the status
    it is recorded with."""

    kind: ReplyKind
    score: int | None
    status: str

    def as_detail(self) -> dict[str, Any]:
        """The ``reply`` key of the recorded payload (``ledger.replies``)."""
        detail: dict[str, Any] = {"kind": self.kind.value}
        if self.score is not None:
            detail["score"] = self.score
        if self.status == ReplyStatus.OUT_OF_RANGE:
            detail["out_of_range"] = True
        return detail


MESSAGE = ReadReply(ReplyKind.MESSAGE, None, ReplyStatus.MESSAGE)


def _is_separator(ch: str) -> bool:
    # Punctuation, spaces, symbols (emoji included) and control characters; a sign and a
    # decimal point are kept so that "-1" and "4.5" are not read as 1 and 45.
    return ch not in "+-." and unicodedata.category(ch)[0] in "PZSC"


def normalise_reply(body: str | None) -> str:
    """The reply as it is compared: NFKC (full-width ``５``, ``Ｙ`` become ``5``, ``Y``),
    case-folded, every space, punctuation mark, symbol and emoji removed (``" 5！"``,
    ``"5 分"``, ``"「满意」"`` are ``5``, ``5分``, ``满意``), and a trailing full stop."""
    text = unicodedata.normalize("NFKC", body or "").casefold()
    return "".join(ch for ch in text if not _is_separator(ch)).rstrip(".")


def score_kind(score: int) -> ReplyKind:
    return ReplyKind.SATISFIED if score >= SATISFIED_FROM else ReplyKind.UNSATISFIED


def read_reply(body: str | None) -> ReadReply:
    """What an inbound message that is not a keyword says (no I/O).

    - ``1``-``5`` (full-width too, a trailing ``分`` allowed: ``5分``): that score.
    - ``满意``, ``很满意``, ``非常满意`` (and 滿意 …), ``Y``: 5; ``不满意``, ``很不满意``,
      ``非常不满意`` (and 不滿意 …), ``N``: 1. (``YES`` is not here: Twilio and
      ``webhooks.keywords`` take it for START.)
    - a score and a word that agree (``5 满意``, ``2分不满意``): the score; that disagree
      (``1 满意``): a message, for a person to read.
    - a whole number of up to three digits outside 1-5 (``0``, ``6``, ``10``, ``-1``, ``4.5``):
      a message, recorded ``out-of-range``.
    - anything else: a message for the agent.
    """
    text = normalise_reply(body)
    if not text:
        return MESSAGE
    if text in SATISFIED_WORDS:
        return ReadReply(ReplyKind.SATISFIED, MAX_SCORE, ReplyStatus.SATISFIED)
    if text in UNSATISFIED_WORDS:
        return ReadReply(ReplyKind.UNSATISFIED, MIN_SCORE, ReplyStatus.UNSATISFIED)
    found = _NUMBER.fullmatch(text)
    if found is None:
        return MESSAGE
    sign, number, _, rest = found.groups()
    if rest and rest not in SATISFIED_WORDS | UNSATISFIED_WORDS:
        return MESSAGE
    if number not in unicodedata.normalize("NFKC", body or ""):
        return MESSAGE  # digits apart ("1 2 3"): several numbers, not one
    whole = number.split(".")[0]
    if len(whole) > _SCORE_DIGITS:
        return MESSAGE
    if sign == "-" or "." in number or not MIN_SCORE <= int(number) <= MAX_SCORE:
        return ReadReply(ReplyKind.MESSAGE, None, ReplyStatus.OUT_OF_RANGE)
    score = int(number)
    kind = score_kind(score)
    if rest and (rest in SATISFIED_WORDS) != (kind is ReplyKind.SATISFIED):
        return MESSAGE  # "1 满意": which one is meant is for a person to ask
    return ReadReply(kind, score, kind.value)


@dataclass(frozen=True)
class ReplyIntake:
    """Where the business events of replies go, and the reply window; given by the web layer
    (``submit`` puts events into the inbox, as the API does, at ``now``)."""

    window: dt.timedelta
    submit: Callable[[Sequence[dict[str, Any]], dt.datetime], None]


@dataclass(frozen=True)
class HeardReply:
    """A reply read and matched: what to record and what to submit."""

    read: ReadReply
    touch: AnsweredTouch | None
    customer_id: str | None  # of the provider event (None: unknown, or several and no touch)
    events: list[dict[str, Any]]
    detail: dict[str, Any]  # the ``reply`` key of the recorded payload


def event_id(prefix: str, provider: str, message_id: str, customer_id: str) -> str:
    """The business event's id, from the provider's message id: a replay gives the same."""
    plain = f"{prefix}:{provider}:{message_id}:{customer_id}"
    if len(plain) <= 128:
        return plain
    return f"{prefix}:{provider}:" + hashlib.sha256(plain.encode("utf-8")).hexdigest()


def clip(text: str, limit: int = MAX_TEXT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _case_of(store: Store, touch: AnsweredTouch | None) -> dict[str, str]:
    """The complaint case the answered touch was about (its event's ``case_id``, with its
    category and severity), or {}."""
    if touch is None or not touch.event_id:
        return {}
    with store.read_session() as session:
        payload = session.scalar(select(Event.payload).where(Event.event_id == touch.event_id))
    if not isinstance(payload, dict) or not isinstance(payload.get("case_id"), str):
        return {}
    case = {"case_id": payload["case_id"]}
    for key in ("category", "severity"):
        if isinstance(payload.get(key), str):
            case[key] = payload[key]
    return case


def hear_reply(
    store: Store,
    *,
    provider: str,
    message_id: str,
    channel: str,
    address: str,
    owners: Sequence[str],
    body: str | None,
    now: dt.datetime,
    window: dt.timedelta,
    status: str | None = None,
    text: str | None = None,
) -> HeardReply:
    """Read ``body``, find the touch it answers, and make its business events.

    ``owners``: the customers with that address. A score answers a touch: with no touch
    within the window, it is a message for the agent (what it rates is for them to ask).
    Several customers on one address: the one whose touch was sent last; with no touch, each
    of them gets the message (their agent reads it). ``status`` overrides the recorded status
    (``possible-stop``); ``text`` is the message for the agent when it is more than ``body``
    (an email's reply, whose first line is read)."""
    read = read_reply(body)
    touch = (
        answered_touch(store, channel, owners, address, since=now - window, until=now)
        if owners
        else None
    )
    if read.score is not None and touch is None:
        read = MESSAGE
    if status is not None:
        read = dataclasses.replace(read, status=status)
    customers = [touch.customer_id] if touch is not None else list(owners)
    events: list[dict[str, Any]] = []
    case = _case_of(store, touch) if read.kind is not ReplyKind.MESSAGE else {}
    about: dict[str, Any] = {}
    if touch is not None:
        about = {"touch_id": touch.touch_id, "rule_id": touch.rule_id}
    for customer_id in customers:
        base = {"customer_id": customer_id, "occurred_at": now.isoformat()}
        if read.kind is ReplyKind.MESSAGE:
            payload: dict[str, Any] = {"text": clip(text if text is not None else body or "")}
            payload.update(about)
        else:
            payload = {"score": read.score, **about}
            if case:
                payload["case_id"] = case["case_id"]
        events.append(
            {
                "event_id": event_id("reply", provider, message_id, customer_id),
                "type": f"reply_{read.kind.value}",
                **base,
                "payload": payload,
            }
        )
        if read.kind is ReplyKind.UNSATISFIED and case:
            events.append(
                {
                    "event_id": event_id("reopen", provider, message_id, customer_id),
                    "type": "complaint_reopened",
                    **base,
                    "payload": case,
                }
            )
    single = owners[0] if len(owners) == 1 else None
    customer = touch.customer_id if touch is not None else single
    detail = read.as_detail()
    if touch is None and owners:
        detail["no_touch"] = True
    log.info(
        "webhook: %s reply from %s read as %s%s (touch %s); %d event(s) for the inbox",
        provider,
        mask_recipient(address),
        read.status,
        f" {read.score}" if read.score is not None else "",
        touch.touch_id if touch is not None else "none within the window",
        len(events),
    )
    return HeardReply(read, touch, customer, events, {REPLY_KEY: detail})
