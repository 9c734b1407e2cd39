"""How a customer's reply is read (``webhooks.replies.read_reply``): every form of a score,
the satisfaction words, numbers out of range, and messages; no I/O."""

from __future__ import annotations

import pytest

from caretouch.vocab import ReplyKind
from caretouch.webhooks.keywords import keyword
from caretouch.webhooks.replies import read_reply

S, U, M = ReplyKind.SATISFIED, ReplyKind.UNSATISFIED, ReplyKind.MESSAGE


@pytest.mark.parametrize(
    ("body", "kind", "score"),
    [
        # Scores 1-5: 4 and 5 are satisfied, 1 to 3 are not (a 3 gets a call).
        ("1", U, 1),
        ("2", U, 2),
        ("3", U, 3),
        ("4", S, 4),
        ("5", S, 5),
        # Full-width digits, spaces, punctuation and emoji around them.
        ("５", S, 5),
        ("１", U, 1),
        (" 4 ", S, 4),
        ("5!", S, 5),
        ("5。", S, 5),
        ("「３」", U, 3),
        ("5 👍", S, 5),
        ("\t2\n", U, 2),
        ("5.", S, 5),
        # A trailing 分 ("points"), full-width or not.
        ("5分", S, 5),
        ("５分", S, 5),
        ("2 分", U, 2),
        # A score and a word that agree.
        ("5 满意", S, 5),
        ("５分，非常满意！", S, 5),
        ("1不满意", U, 1),
        ("2 不滿意", U, 2),
        # The words.
        ("满意", S, 5),
        ("很满意", S, 5),
        ("非常满意", S, 5),
        ("滿意", S, 5),
        ("非常滿意。", S, 5),
        ("不满意", U, 1),
        ("很不满意", U, 1),
        ("非常不满意", U, 1),
        ("不滿意", U, 1),
        ("很不滿意！", U, 1),
        # Y and N, any case, full-width.
        ("Y", S, 5),
        ("y", S, 5),
        ("Ｙ", S, 5),
        ("ｙ.", S, 5),
        ("N", U, 1),
        ("n", U, 1),
        ("Ｎ", U, 1),
    ],
)
def test_satisfaction_answers_are_scores(body: str, kind: ReplyKind, score: int) -> None:
    read = read_reply(body)
    assert (read.kind, read.score, read.status) == (kind, score, kind.value)


@pytest.mark.parametrize("body", ["0", "6", "10", "99", "-1", "４.５", "4.5", "０", "６分", "100"])
def test_numbers_out_of_range_are_messages_marked_out_of_range(body: str) -> None:
    read = read_reply(body)
    assert (read.kind, read.score, read.status) == (M, None, "out-of-range")
    assert read.as_detail() == {"kind": "message", "out_of_range": True}


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   ",
        "请问我的保单什么时候到期？",
        "thanks!",
        "5 stars, thank you",  # more than a score
        "1 满意",  # disagree: a person asks what is meant
        "5 不满意",
        "13812348000",  # a number, but not a score's: a phone or policy number
        "P20261120",
        "12 3",
        "no",
        "ok",
        "\x00",  # (a NUL is refused before it is read; read alone it is no score)
        "5" * 5000,
    ],
)
def test_anything_else_is_a_message(body: str) -> None:
    read = read_reply(body)
    assert (read.kind, read.score, read.status) == (M, None, "message")


def test_yes_stays_a_start_keyword_and_y_is_a_score() -> None:
    # Twilio's Advanced Opt-Out takes YES for START: it never reaches the reply reader.
    assert keyword("YES") == "START"
    assert keyword("Y") is None and read_reply("Y").score == 5
    assert keyword("N") is None and read_reply("N").score == 1
