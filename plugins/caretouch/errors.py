"""One error hierarchy for the whole engine.

``CareError`` is what the engine raises for anything a user can fix or an operator must see.
``ConfigurationError`` is kept apart so that a broad ``except CareError`` around a send loop
never swallows a broken set-up by accident.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a user's file, printed as ``file:line:col`` (1-based)."""

    file: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.col is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"


class CareError(Exception):
    """Base of every error the engine raises on purpose.

    Carries what an operator needs to act: the rule, the customer, the channel and the
    provider's answer, whichever apply.
    """

    def __init__(
        self,
        message: str,
        *,
        rule_id: str | None = None,
        customer_id: str | None = None,
        channel: str | None = None,
        provider_answer: str | None = None,
        location: Location | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rule_id = rule_id
        self.customer_id = customer_id
        self.channel = channel
        self.provider_answer = provider_answer
        self.location = location

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return prefix + self.message


class ConfigurationError(Exception):
    """The set-up is wrong (missing directory, bad store URL, missing credentials).

    Deliberately not a ``CareError``: nothing that handles per-touch failures may catch it.
    """


class ValidationError(CareError):
    """A user's file (rule, policy, template, CSV) is invalid; ``location`` says where."""


class ValidationFailed(CareError):
    """Several validation errors at once; ``errors`` lists them in file order."""

    def __init__(self, errors: list[ValidationError]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class RenderError(CareError):
    """A template could not be rendered for one touch (e.g. an undefined variable)."""


class RateLimiterUnavailable(CareError):
    """The shared rate limiter (``CARE_RATE_LIMIT_URL``) cannot be reached: nothing is sent
    rather than sent unlimited. The message names the URL, never its password."""


class TaskError(CareError):
    """A task for an agent cannot be completed as asked: unknown, or no longer open
    (``care task done``)."""
