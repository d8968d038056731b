"""The hook screen frames pass through before encoding (the masking issue fills it).

Contract (docs/design.md): ``push(item) -> list[item]`` returns the frames ready to encode, in
order (a filter may hold some back: the masking delay line); ``flush() -> list[item]`` returns
what is held at segment/session end; ``ledger_entries() -> list[dict]`` drains masking-ledger
records, which the pipeline seals into ``seg-NNNNNN.masklog.drseg``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from recorder.items import VideoFrame
from station import logs

log = logs.get("mask")


class FrameFilter(Protocol):
    def push(self, item: VideoFrame) -> list[VideoFrame]: ...

    def flush(self) -> list[VideoFrame]: ...

    def ledger_entries(self) -> list[dict[str, Any]]: ...


class PassThroughFilter:
    """Used when masking is disabled by policy or no masker is configured."""

    enabled = False

    def push(self, item: VideoFrame) -> list[VideoFrame]:
        return [item]

    def flush(self) -> list[VideoFrame]:
        return []

    def ledger_entries(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


FilterFactory = Callable[..., FrameFilter]


def masker_factory() -> FilterFactory | None:
    """``recorder.masking.make_filter`` if the masking package provides it, else None."""
    try:
        from recorder import masking
    except ImportError:
        return None
    factory = getattr(masking, "make_filter", None)
    return factory if callable(factory) else None


def make_screen_filter(policy: Any, factory: FilterFactory | None = None, **kw: Any) -> FrameFilter:
    """The filter for a session: the masker when policy masking.enabled and one is available."""
    if not policy.masking.enabled:
        return PassThroughFilter()
    factory = factory or masker_factory()
    if factory is None:
        log.warning("masking is enabled by policy but no masker is installed: frames pass through")
        return PassThroughFilter()
    return factory(policy, **kw)
