"""What sources push: every item carries ``capture_ns`` from the session clock, taken where the
data was acquired (screen just before the grab, camera right after ``read()``, microphone the
time of the FIRST sample of the block, operation events at the event)."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np


@dataclass(slots=True)
class VideoFrame:
    capture_ns: int
    image: np.ndarray  # (h, w, 3) BGR, (h, w, 4) BGRA, or I420 planes (h * 3 // 2, w); owned
    seq: int = 0       # per-source frame number (from 0)
    paused: bool = False

    @property
    def i420(self) -> bool:
        """The image holds the Y, U and V planes as the encoder takes them (sources turn grey
        pictures into BGR, so a 2-D image is always I420)."""
        return self.image.ndim == 2


def i420_planes(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (h, w), U and V (h / 2, w / 2) views of contiguous I420 planes ``(h * 3 // 2, w)``.
    U and V follow Y back to back; they are not whole rows of the array when h / 2 is odd."""
    h, w = img.shape[0] * 2 // 3, img.shape[1]
    flat = img.reshape(-1)
    q = h * w // 4
    return (img[:h], flat[h * w:h * w + q].reshape(h // 2, w // 2),
            flat[h * w + q:h * w + 2 * q].reshape(h // 2, w // 2))


@dataclass(slots=True)
class AudioChunk:
    capture_ns: int      # clock time of the FIRST sample
    rate_hz: int
    samples: np.ndarray  # (frames, channels) float32 in [-1, 1], owned copy
    overflow: bool = False  # the device reported lost input before this block


@dataclass(slots=True)
class OpEvent:
    capture_ns: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


T = TypeVar("T")


class DropQueue(Generic[T]):
    """A bounded queue that never blocks the producer: a full queue drops the new item and counts.

    ``offer`` is called from device threads and PortAudio callbacks; ``drain`` from the consumer.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self.offered = 0
        self.dropped = 0
        self.dropped_full = 0  # the consumer fell behind: the queue was full
        self.dropped_late = 0  # the capture thread itself was late (ticks skipped, failed grabs)

    def offer(self, item: T) -> bool:
        with self._lock:
            self.offered += 1
            if len(self._items) >= self.capacity:
                self.dropped += 1
                self.dropped_full += 1
                return False
            self._items.append(item)
            return True

    def count_drop(self, n: int = 1) -> None:
        """Count items lost before they reached the queue (e.g. capture ticks missed)."""
        with self._lock:
            self.offered += n
            self.dropped += n
            self.dropped_late += n

    def drain(self) -> list[T]:
        with self._lock:
            out = list(self._items)
            self._items.clear()
            return out

    def __len__(self) -> int:
        return len(self._items)
