"""The real Redis for event tests (127.0.0.1:6379, or $CARE_TEST_REDIS_URL).

Tests that need it skip with the reason when it is unreachable, except under CI=true, where
they fail. Every test uses stream keys of its own, deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import in_ci

REDIS_URL = os.environ.get("CARE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis(url: str = REDIS_URL, *, decode_responses: bool = True) -> Any:
    """A client for the test Redis at ``url``, or skip (fail under CI) saying why not."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=decode_responses, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis at {url} unreachable: {type(exc).__name__}: {exc}"
        if in_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return client


def open_client() -> Iterator[Any]:
    """For a fixture: a client (or a skip), closed afterwards."""
    client = require_redis()
    yield client
    client.close()


def own_stream_key(client: Any) -> Iterator[str]:
    """For a fixture: a stream key of this test's own; it and its doorbell mark are deleted
    afterwards."""
    key = f"care-test:{uuid.uuid4().hex[:12]}"
    yield key
    for name in client.scan_iter(f"{key}*"):
        client.delete(name)
