"""The masking ledger: proof of what was masked, without the values.

Each record is one masked region over a time span::

    {"rule": "mobile", "box": [x0, y0, x1, y1], "start_ns": ..., "end_ns": ..., "frames": 12,
     "confidence": 0.98, "value_hash": "hmac-sha256 hex (first 32)"}

``value_hash`` is an HMAC-SHA256 of the value (digits only for numbers) under a per-session salt,
so a reviewer can tell that two spans hid the same value without learning it. Rules without a
value (``unresolved``, ``context_pending``, ``window``, ``frame_error``) carry no hash. The
pipeline seals the records per segment (``seg-NNNNNN.masklog.drseg``); :meth:`MaskLedger.summary`
goes into the segment manifest.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import threading
from collections.abc import Iterable
from typing import Any

from recorder.masking.analysis import Region

NUMERIC_RULES = {"mobile", "landline", "id18", "id15", "bank_card", "labelled", "uncertain"}


def value_hash(salt: bytes, rule: str, value: str) -> str:
    if not value:
        return ""
    norm = re.sub(r"\D", "", value) if rule in NUMERIC_RULES and re.search(r"\d", value) else value.strip()
    return hmac.new(salt, norm.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


class MaskLedger:
    """Turns per-frame regions into spans; thread-safe."""

    def __init__(self, salt: bytes) -> None:
        self._salt = salt
        self._open: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._done: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.frames = 0
        self.frames_whole = 0
        self.masked_area = 0.0
        self.pending_area = 0.0
        self.max_masked = 0.0
        self.max_pending = 0.0

    def frame(self, t_ns: int, regions: Iterable[Region], area: int, whole: bool = False) -> None:
        regions = list(regions)
        seen: set[tuple[Any, ...]] = set()
        with self._lock:
            self.frames += 1
            self.frames_whole += int(whole)
            masked = sum(r.box.w * r.box.h for r in regions)
            pending = sum(r.box.w * r.box.h for r in regions if r.rule in ("unresolved", "context_pending"))
            self.masked_area += min(1.0, masked / max(area, 1))
            self.pending_area += min(1.0, pending / max(area, 1))
            self.max_masked = max(self.max_masked, min(1.0, masked / max(area, 1)))
            self.max_pending = max(self.max_pending, min(1.0, pending / max(area, 1)))
            for r in regions:
                h = value_hash(self._salt, r.rule, r.value)
                key = (r.rule, r.box.x0, r.box.y0, r.box.x1, r.box.y1, h)
                seen.add(key)
                rec = self._open.get(key)
                if rec is None:
                    self.counts[r.rule] += 1
                    rec = {"rule": r.rule, "box": r.box.as_list(), "start_ns": t_ns, "end_ns": t_ns,
                           "frames": 0, "confidence": round(float(r.confidence), 3)}
                    if h:
                        rec["value_hash"] = h
                    self._open[key] = rec
                rec["end_ns"] = t_ns
                rec["frames"] += 1
            for key in [k for k in self._open if k not in seen]:
                self._done.append(self._open.pop(key))

    def drain(self, close_open: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            if close_open:
                self._done.extend(self._open.values())
                self._open.clear()
            out, self._done = self._done, []
            return out

    def summary(self) -> dict[str, Any]:
        with self._lock:
            n = max(self.frames, 1)
            return {"enabled": True, "frames": self.frames, "frames_masked_whole": self.frames_whole,
                    "regions_by_rule": dict(self.counts),
                    "masked_area_share": round(self.masked_area / n, 4),
                    "pending_area_share": round(self.pending_area / n, 4),
                    "max_masked_area_share": round(self.max_masked, 4),
                    "max_pending_area_share": round(self.max_pending, 4)}
