"""Carry the flow's events from any thread (local API, recording workers, health loop) into the
UI thread, and run the agent's actions off the UI thread so the window never freezes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from station import logs
from station.errors import StationError
from station.flow import SessionFlow
from ui.qt import QObject, Signal

log = logs.get("ui")


class FlowBridge(QObject):
    """Expose a :class:`~station.flow.SessionFlow` to the UI thread through queued signals.

    Signals:
        state_changed: the flow's state changed. arg: snapshot dict.
        warning_changed: a live warning began or ended. args: kind, active.
        health_updated: fresh device health. arg: dict (camera thumbnail, mic level, ...).
        stopped_unexpectedly: the recording ended by itself. arg: dict (code, error).
        action_failed: an action the agent started was refused. arg: message.
    """

    state_changed = Signal(dict)
    warning_changed = Signal(str, bool)
    health_updated = Signal(dict)
    stopped_unexpectedly = Signal(dict)
    action_failed = Signal(str)

    def __init__(self, flow: SessionFlow, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.flow = flow
        self._busy = 0
        self._lock = threading.Lock()
        flow.subscribe(self._on_flow_event)

    def _on_flow_event(self, name: str, data: dict[str, Any]) -> None:
        # emitted from whatever thread the flow ran on; the receivers live in the UI thread, so
        # Qt queues the call (AutoConnection across threads)
        if name == "state_changed":
            self.state_changed.emit(data)
        elif name == "warning":
            self.warning_changed.emit(str(data["kind"]), bool(data["active"]))
        elif name == "health":
            self.health_updated.emit(data)
        elif name == "stopped_unexpectedly":
            self.stopped_unexpectedly.emit(data)

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def run(self, action: Callable[[], Any], what: str = "") -> threading.Thread:
        """Run one flow action on a worker thread; a refusal comes back as ``action_failed``."""
        def work() -> None:
            try:
                action()
            except StationError as exc:
                self.action_failed.emit(str(exc))
            except Exception as exc:
                log.exception("UI action %s failed", what)
                self.action_failed.emit(f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._busy -= 1
        with self._lock:
            self._busy += 1
        t = threading.Thread(target=work, name=f"ui-action-{what}", daemon=True)
        t.start()
        return t
