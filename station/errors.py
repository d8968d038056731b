"""Error classes and stop codes shared by every layer.

An error's docstring is its message template; ``str(err)`` formats it with the constructor
arguments. Errors also inherit from the closest builtin so callers can catch them generically.
"""

from __future__ import annotations

import enum
from typing import Any


class StopCode(enum.StrEnum):
    """Why a recording ended. Shown in the UI and written into the session manifest."""

    NORMAL = "normal"
    DEVICE_LOST = "device-lost"
    DISK_FULL = "disk-full"
    ENCODER_ERROR = "encoder-error"
    WRITE_ERROR = "write-error"  # the disk refused a write for another reason than space (EIO, EROFS)
    CRASH_RECOVERED = "crash-recovered"
    CONSENT_REFUSED = "consent-refused"


class StationError(Exception):
    """Station error"""

    stop_code: StopCode | None = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.args = args

    def __str__(self) -> str:
        template = (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        try:
            return template.format(*self.args)
        except (IndexError, KeyError, ValueError):
            return template + (": " + ", ".join(map(str, self.args)) if self.args else "")


class PolicyError(StationError, ValueError):
    """{}"""


class SecretMissing(StationError, LookupError):
    """secret {!r} is not in the keyring; {}"""


class KeyringUnavailable(StationError, RuntimeError):
    """no usable keyring backend: {}"""


class DeviceLost(StationError, ConnectionError):
    """capture device {!r} stopped responding: {}"""

    stop_code = StopCode.DEVICE_LOST


class DiskFull(StationError, OSError):
    """disk full: {2} (data folder {0})"""

    stop_code = StopCode.DISK_FULL


class EncoderError(StationError, RuntimeError):
    """encoder for {!r} failed: {}"""

    stop_code = StopCode.ENCODER_ERROR


class UsageError(StationError, ValueError):
    """{}"""
