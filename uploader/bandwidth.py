"""Bandwidth cap and retry backoff, both with an injectable clock so tests need not sleep.

:class:`TokenBucket` limits bytes per second shared by every upload thread. Its rate comes from a
function evaluated on every request, so the policy for calls in progress (pause or throttle while
recording) takes effect at once: a rate of 0 pauses, ``None`` is unlimited.

:class:`LimitedStream` wraps a request body like s3transfer's ``BandwidthLimitedStream``: botocore
may read the body once to compute checksums before sending; only reads while the request is being
transferred are charged (see :func:`register_transfer_signals`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

CHUNK_BYTES = 64 * 1024


class TokenBucket:
    """Allow ``rate_bytes_s()`` bytes per second on average, bursts up to ``burst_s`` seconds' worth.

    ``clock`` returns seconds (monotonic); ``sleep`` waits. Both injectable.
    """

    def __init__(self, rate_bytes_s: Callable[[], float | None], *, burst_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, max_wait_s: float = 0.5) -> None:
        self._rate = rate_bytes_s
        self._burst_s = burst_s
        self._clock = clock
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()
        self.waited_s = 0.0  # total time spent waiting (all threads), for stats

    def consume(self, amount: int) -> None:
        """Block until ``amount`` bytes may be sent."""
        while True:
            with self._lock:
                rate = self._rate()
                now = self._clock()
                if rate is None:
                    self._tokens, self._last = 0.0, now
                    return
                if rate > 0:
                    self._tokens = min(self._tokens + (now - self._last) * rate,
                                       max(rate * self._burst_s, float(amount)))
                self._last = now
                if rate > 0 and self._tokens >= amount - 1e-6 * max(amount, 1):  # float slack
                    self._tokens = max(self._tokens - amount, 0.0)
                    return
                # paused (rate 0) or not enough tokens: wait, then re-read the rate
                wait = self._max_wait_s if rate <= 0 else min(
                    max((amount - self._tokens) / rate, 1e-3), self._max_wait_s)
            self.waited_s += wait
            self._sleep(wait)


class LimitedStream:
    """A read-only file-like over ``raw`` that charges a :class:`TokenBucket` while transferring."""

    def __init__(self, raw: BinaryIO, bucket: TokenBucket) -> None:
        self._raw = raw
        self._bucket = bucket
        self._transferring = False

    def signal_transferring(self) -> None:
        self._transferring = True

    def signal_not_transferring(self) -> None:
        self._transferring = False

    def read(self, amount: int = -1) -> bytes:
        if not self._transferring:
            return self._raw.read(amount)
        if amount is None or amount < 0 or amount > CHUNK_BYTES:
            amount = CHUNK_BYTES  # urllib3/http.client call read() until b""
        data = self._raw.read(amount)
        if data:
            self._bucket.consume(len(data))  # before the caller sends it
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._transferring = False
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def __len__(self) -> int:
        pos = self._raw.tell()
        end = self._raw.seek(0, 2)
        self._raw.seek(pos)
        return end - pos


def _not_transferring(request: Any, **_: Any) -> None:
    body = getattr(request, "body", None)
    if isinstance(body, LimitedStream):
        body.signal_not_transferring()


def _transferring(request: Any, **_: Any) -> None:
    body = getattr(request, "body", None)
    if isinstance(body, LimitedStream):
        body.signal_transferring()


def register_transfer_signals(client: Any) -> None:
    """Tell :class:`LimitedStream` bodies when botocore is really sending them (s3transfer's way)."""
    client.meta.events.register_first("request-created.s3", _not_transferring)
    client.meta.events.register_last("request-created.s3", _transferring)


class Backoff:
    """Retry delays: ``initial_s`` x ``factor`` per attempt, +-``jitter`` share, capped at ``max_s``."""

    def __init__(self, initial_s: float = 2.0, factor: float = 1.5, max_s: float = 900.0,
                 jitter: float = 0.2, rng: Callable[[], float] = random.random) -> None:
        self.initial_s, self.factor, self.max_s, self.jitter = initial_s, factor, max_s, jitter
        self._rng = rng

    def base_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1 = first retry), without jitter."""
        exp = min(max(attempt - 1, 0), 200)
        return float(min(self.max_s, self.initial_s * self.factor ** exp))

    def delay_s(self, attempt: int) -> float:
        spread = 1 + self.jitter * (2 * self._rng() - 1)
        return float(min(self.max_s, self.base_s(attempt) * spread))
