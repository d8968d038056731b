"""Masking: customer data never reaches the encoder (see docs/design.md, MASKING-NOTES.md).

``make_filter(policy, clock=None, window_source=None)`` builds the real-time screen filter the
recording pipeline calls when ``masking.enabled``; ``mask_image`` is the still-image path of
``station mask-image``; ``redact_text`` cleans operation-log fields and window titles.
"""

from __future__ import annotations

from typing import Any

from recorder.masking.detectors import Finding, find_pii, redact_text

__all__ = ["Finding", "find_pii", "make_filter", "redact_text"]


def make_filter(policy: Any, clock: Any = None, window_source: Any = None, salt: bytes | None = None,
                **kw: Any) -> Any:
    """The real-time MaskFilter configured from policy ``masking.*``."""
    from recorder.masking.masker import MaskFilter
    from recorder.masking.ocr import get_engine

    m = policy.masking
    if window_source is None and m.window_rules:
        from recorder.masking.windows import default_window_source

        window_source = default_window_source()
    return MaskFilter(labels=m.labels, delay_ms=m.delay_ms, engine=get_engine(m.engine), style=m.style,
                      window_source=window_source, window_rules=m.window_rules, salt=salt, **kw)
