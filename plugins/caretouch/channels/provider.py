"""What every transport to a real provider shares: its limits from the account's credentials,
a request timeout, and one SDK client per sending thread.

``base.Transport`` runs the fixed sequence (body limit, rate limit, retries, concurrency);
``ProviderTransport`` adds the set-up that Twilio and SendGrid would otherwise each repeat:

- the account's ``rate_per_sec`` / ``concurrency`` (``CARE_SMS_RATE``, a Connection's extra, ...)
  override the class's defaults, unless the caller passes its own;
- ``client()`` is this thread's SDK client, made on first use by ``new_client``: the SDKs'
  HTTP sessions are not meant to be shared between threads, and a client kept per sending
  thread keeps its keep-alive connection from one message to the next;
- ``account()`` names the account whose rate budget the requests spend, the key of the
  limiter shared by every process (``shared_limits``).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from ..vocab import Channel
from .base import Transport


class ProviderCredentials(Protocol):
    """The part of a provider's credentials (``channels.credentials``) this module reads."""

    @property
    def rate_per_sec(self) -> float | None: ...

    @property
    def concurrency(self) -> int | None: ...


CredentialsT = TypeVar("CredentialsT", bound=ProviderCredentials)
ClientT = TypeVar("ClientT")


class ProviderTransport(Transport, Generic[CredentialsT, ClientT]):
    """A provider's transport for the channel it ``serves``, through the provider's SDK."""

    serves: ClassVar[Channel]

    def __init__(self, credentials: CredentialsT, *, timeout: float = 20.0, **limits: Any) -> None:
        limits.setdefault("rate_per_sec", credentials.rate_per_sec)
        limits.setdefault("concurrency", credentials.concurrency)
        super().__init__(self.serves, **limits)
        self.credentials = credentials
        self.timeout = timeout
        self._local = threading.local()

    def __repr__(self) -> str:
        # The credentials' repr shows no secret (channels.credentials).
        return (
            f"{type(self).__name__}({self.credentials!r}, rate={self.rate}/s, "
            f"workers={self.workers})"
        )

    def client(self) -> ClientT:
        """This thread's SDK client, made on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self.new_client()
            self._local.client = client
        return client

    def thread_client(self) -> ClientT | None:
        """This thread's SDK client if it has made one (to read what its last answer left)."""
        return getattr(self._local, "client", None)

    @abstractmethod
    def account(self) -> str:
        """The key of the provider account whose rate these requests spend: the same for
        every process sending for it, and no secret or identifier in clear
        (``shared_limits.account_key``)."""

    @abstractmethod
    def new_client(self) -> ClientT:
        """A new SDK client for the calling thread, with ``self.timeout``."""
