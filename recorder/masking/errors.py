"""Errors of the masking package (docstring is the message, see station/errors.py)."""

from __future__ import annotations

from station.errors import StationError


class OcrUnavailable(StationError, RuntimeError):
    """OCR engine {!r} is unavailable: {}"""


class MaskingError(StationError, RuntimeError):
    """masking failed: {}"""


class ImageUnreadable(StationError, ValueError):
    """cannot read image {!r}: {}"""
