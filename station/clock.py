"""One clock for every source: ``time.monotonic_ns`` anchored to UTC once per session.

Every captured item carries ``capture_ns`` from :meth:`Clock.now_ns`, taken where the data is
acquired. Presentation times are ``capture_ns - t0_ns``. The UTC anchor maps monotonic time to
wall time without being disturbed by NTP steps during a session.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _now_pair() -> tuple[int, int]:
    """Read (monotonic_ns, utc_ns) as close together as possible (min of 3 brackets)."""
    best: tuple[int, int, int] | None = None
    for _ in range(3):
        a = time.monotonic_ns()
        u = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, (a + b) // 2, u)
    assert best is not None
    return best[1], best[2]


@dataclass
class Clock:
    """Monotonic nanoseconds with a UTC anchor.

    ``t0_ns`` is the session origin (pts 0); ``utc_at_t0_ns`` is the wall clock at that instant.
    ``monotonic`` is injectable for tests.
    """

    monotonic: Callable[[], int] = time.monotonic_ns
    t0_ns: int = 0
    utc_at_t0_ns: int = 0
    _anchored: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not self._anchored:
            if self.monotonic is time.monotonic_ns:
                self.t0_ns, self.utc_at_t0_ns = _now_pair()
            else:
                self.t0_ns, self.utc_at_t0_ns = self.monotonic(), time.time_ns()
            self._anchored = True

    def now_ns(self) -> int:
        return self.monotonic()

    def since_t0_ns(self, capture_ns: int | None = None) -> int:
        return (self.now_ns() if capture_ns is None else capture_ns) - self.t0_ns

    def utc_ns(self, capture_ns: int) -> int:
        return self.utc_at_t0_ns + (capture_ns - self.t0_ns)

    def utc(self, capture_ns: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.utc_ns(capture_ns) / 1e9, tz=dt.UTC)

    def utc_iso(self, capture_ns: int) -> str:
        return self.utc(capture_ns).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
