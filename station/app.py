"""Composition root of the running station: one place that wires the long-running parts.

::

    Context -> session factory (RecordingSession, or FakeRecording for UI demos/tests)
            -> SessionFlow (consent, steps, pause, stop)
            -> LocalApi (127.0.0.1, token from keyring)
            -> HealthLoop (live warnings, a few times a second)
            -> DesktopWatcher (operation log: windows, clicks, key counts)
            -> Uploader.run_forever (background upload, throttled during calls)

No Qt here: ``station run`` builds this, then hands the flow to ``ui``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from station import logs
from station.context import Context
from station.errors import StationError
from station.flow import FakeRecording, FlowState, HealthWatch, RecordingLike, SessionFlow

log = logs.get("session")


Rects = Callable[[], list[tuple[int, int, int, int]]]
OWN_APP = "dualrec-station"
OWN_WINDOW_RULE = rf"^{OWN_APP}: "


class OwnWindows:
    """A masking window source (``recorder.masking.windows.WindowSource``) that reports the
    station's own windows (geometry cached by the UI thread) before the platform's windows, so
    that the rule :data:`OWN_WINDOW_RULE` masks them whole in the screen recording."""

    def __init__(self, rects: Rects, inner: Any = None) -> None:
        self.rects, self.inner = rects, inner

    def windows(self) -> list[Any]:
        from recorder.masking.lines import Box
        from recorder.masking.windows import WindowInfo

        own = [WindowInfo(OWN_APP, "agent window", Box(x, y, x + w, y + h)) for x, y, w, h in self.rects()]
        return own + (list(self.inner.windows()) if self.inner is not None else [])


def own_window_masker(rects: Rects) -> Callable[..., Any] | None:
    """A masker factory for RecordingSession that also masks the station's own windows."""
    try:
        from recorder.masking import make_filter
        from recorder.masking.windows import default_window_source
    except ImportError:
        return None

    def factory(policy: Any, **kw: Any) -> Any:
        rules = [*policy.masking.window_rules, OWN_WINDOW_RULE]
        inner = default_window_source() if policy.masking.window_rules else None
        return make_filter(policy.replace(masking__window_rules=rules),
                           window_source=OwnWindows(rects, inner), **kw)
    return factory


def recording_factory(ctx: Context, *, fake_devices: bool = False, own_rects: Rects | None = None
                      ) -> Callable[..., RecordingLike]:
    """A factory of recording sessions for the flow: the real pipeline when it is installed."""
    try:
        from station.recording import RecordingSession
    except ImportError:
        log.warning("station.recording is not available: sessions record nothing")
        return FakeRecording
    masker = own_window_masker(own_rects) if own_rects is not None else None

    def make(**kw: Any) -> RecordingLike:
        return RecordingSession(ctx, fake_devices=fake_devices, masker_factory=masker,
                                **kw)
    return make


class HealthLoop:
    """Polls the current recording's health a few times a second (live warnings)."""

    def __init__(self, flow: SessionFlow, watch: HealthWatch, period_s: float = 0.33) -> None:
        self.flow, self.watch, self.period_s = flow, watch, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> HealthLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.flow.check_health(self.watch)
            except Exception:
                log.exception("health check failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)


def _mmss(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _local_hhmm(utc: str) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(utc.replace("Z", "+00:00")).astimezone().strftime("%H:%M")
    except ValueError:
        return "?"


class App:
    """The running station without its window."""

    def __init__(self, ctx: Context, *, fake_devices: bool = False,
                 factory: Callable[..., RecordingLike] | None = None, api_port: int | None = None,
                 desktop: bool = True, upload: bool = True, recover_every_s: float = 300.0) -> None:
        self.ctx = ctx
        self._recover_every_s = recover_every_s
        self.own_rects: Callable[[], list[tuple[int, int, int, int]]] = list
        self.factory = factory or recording_factory(ctx, fake_devices=fake_devices,
                                                    own_rects=lambda: self.own_rects())
        self.flow = SessionFlow(ctx.policy, self.factory, audit=ctx.audit)
        self.api: Any = None
        self.health = HealthLoop(self.flow, HealthWatch.from_policy(ctx.policy))
        self.desktop: Any = None
        self.uploader: Any = None
        self.recovered: list[dict[str, Any]] = []
        self.recovered_later: list[dict[str, Any]] = []
        self._recover_thread: threading.Thread | None = None
        self._upload_stop = threading.Event()
        self._upload_thread: threading.Thread | None = None
        self._want_api = ctx.policy.api.enabled
        self._api_port = ctx.policy.api.port if api_port is None else api_port
        self._want_desktop = desktop
        self._want_upload = upload and ctx.policy.upload.enabled

    def start(self) -> App:
        self.ctx.ensure_dirs()
        self.recovered = self._recover()
        if self._recover_every_s > 0:  # sessions another process (`station record`) left open
            self._recover_thread = threading.Thread(target=self._recover_loop, name="recovery",
                                                    daemon=True)
            self._recover_thread.start()
        if self._want_api:
            from station.api import LocalApi

            self.api = LocalApi(self.flow, self.ctx.secrets.api_token(), self.ctx.secrets.customer_salt(),
                                port=self._api_port, audit=self.ctx.audit).start()
        self.health.start()
        if self._want_desktop:
            self._start_desktop()
        if self._want_upload:
            self._start_uploader()
        return self

    def _recover(self) -> list[dict[str, Any]]:
        """Close out sessions a crash left open (this window killed, or `station record`), before
        anything records or uploads: they are then uploaded like any other (docs/format.md 6)."""
        from station.crypto.keys import load_signing_key
        from station.crypto.session import recover_spool

        try:
            sk = load_signing_key(self.ctx.secrets)
        except StationError as exc:
            log.warning("crashed sessions not recovered: %s", exc)
            return []
        if sk is None:
            return []
        try:
            from uploader.service import finished_in_journal

            finished = finished_in_journal(self.ctx.data_dir)
        except Exception as exc:  # an unreadable journal must not keep the seat from starting
            log.warning("upload journal not read for recovery: %s", exc)
            finished = {}
        return recover_spool(self.ctx.spool_dir, sk, self.ctx.station_id, audit=self.ctx.audit,
                             finished=finished)

    def _recover_loop(self) -> None:
        while not self._upload_stop.wait(self._recover_every_s):
            try:
                self.recovered_later.extend(self._recover())
            except Exception:  # never let recovery take the station down
                log.exception("periodic recovery failed")

    def recovery_notice(self) -> str | None:
        """One line for the agent about the sessions recovered at this start, or None."""
        if not self.recovered:
            return None
        parts = []
        for man in self.recovered:
            rec = man.get("recovery") or {}
            kept, lost = float(rec.get("kept_s") or 0), float(rec.get("lost_s_max") or 0)
            until = str(rec.get("until_utc") or man.get("ended_utc") or "")
            when = _local_hhmm(until)
            if rec.get("findings"):
                parts.append(f"session {man['session']} was found altered on this disk and was "
                             "reported to the reviewers")
            else:
                parts.append(f"the last session was interrupted at {when}; "
                             f"{_mmss(kept)} of {_mmss(kept + lost)} kept")
        return "; ".join(parts)

    def _start_desktop(self) -> None:
        from station.desktop import DesktopUnavailable, open_watcher

        try:
            self.desktop = open_watcher(self.flow.oplog)
            self.desktop.start()
        except DesktopUnavailable as exc:
            log.warning("no desktop operation log: %s", exc)
            self.desktop = None
            return
        except Exception:  # e.g. a frozen build missing an Xlib extension module: record anyway
            log.exception("the desktop operation log could not start")
            self.desktop = None
            return
        live = {"consent", "recording", "paused"}
        was_live = [False]

        def on_flow(name: str, data: dict[str, Any]) -> None:
            if name == "state_changed":
                now_live = data.get("state") in live
                if now_live and not was_live[0] and self.desktop is not None:
                    self.desktop.tracker.replay()
                was_live[0] = now_live
        self.flow.subscribe(on_flow)

    def _start_uploader(self) -> None:
        try:
            from uploader.service import Uploader
        except ImportError:
            return
        try:
            self.uploader = Uploader.from_context(
                self.ctx, call_active=lambda: self.flow.state in (FlowState.CONSENT, FlowState.RECORDING,
                                                                  FlowState.PAUSED))
        except Exception as exc:
            log.warning("background upload not started: %s", exc)
            return
        self._upload_thread = threading.Thread(target=self.uploader.run_forever, args=(self._upload_stop,),
                                               name="uploader", daemon=True)
        self._upload_thread.start()

    def backlog_info(self) -> dict[str, Any] | None:
        """For the window: files waiting for upload, their size, the last upload error and the
        sessions held back (quarantined) with their reasons."""
        try:
            from uploader.service import backlog
        except ImportError:
            return None
        return backlog(self.ctx.data_dir, self.ctx.station_id)

    def close(self) -> None:
        if self.flow.state in (FlowState.CONSENT, FlowState.RECORDING, FlowState.PAUSED):
            try:
                self.flow.stop()
            except Exception:
                log.exception("stopping the session at exit failed")
        self.health.close()
        if self.desktop is not None:
            self.desktop.close()
        if self.api is not None:
            self.api.close()
        self._upload_stop.set()  # also ends the periodic recovery
        if self._recover_thread is not None:
            self._recover_thread.join(10)
        if self._upload_thread is not None:
            self._upload_thread.join(10)
            self.uploader.close()
