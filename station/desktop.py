"""Desktop operation log: which application and window the agent works in, clicks, and how many
keys were pressed per window. Never key contents: a key press only increments a counter.

Events go to ``emit(kind, **fields)`` (the flow's ``oplog``, which writes them into the current
recording's operation log on the session clock, or drops them when nothing records):

* ``window``: the active window changed, or its title did. ``app``, ``title`` (passed through
  the PII detectors, :func:`station.shield.redact`), ``window`` (platform id as text);
* ``click``: ``x``, ``y`` (screen pixels), ``button`` (1 left, 2 middle, 3 right), ``app``;
* ``keys``: ``count`` key presses in ``app``/``window`` since the last ``keys`` event, written
  when the window changes and every ``keys_flush_s`` while typing goes on.

Platforms: X11 (python-xlib; the active window from ``_NET_ACTIVE_WINDOW`` when a window manager
publishes it, else the input focus, polled every ``poll_s``; clicks and keys through the RECORD
extension), and Windows (foreground window polled, low-level mouse and keyboard hooks) behind the
same :class:`DesktopWatcher` interface.
"""

from __future__ import annotations

import abc
import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from station import logs
from station.errors import StationError
from station.shield import redact

log = logs.get("capture")
Emit = Callable[..., None]


class DesktopUnavailable(StationError, RuntimeError):
    """desktop operation log unavailable: {}"""


class Tracker:
    """Platform-independent bookkeeping: current window, key counts, redaction."""

    def __init__(self, emit: Emit, keys_flush_s: float = 10.0,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.emit = emit
        self.keys_flush_ns = int(keys_flush_s * 1e9)
        self._now = monotonic_ns
        self._lock = threading.Lock()
        self.window: tuple[str, str, str] | None = None  # (id, app, redacted title)
        self._keys = 0
        self._keys_since = 0

    def _send(self, kind: str, **fields: Any) -> None:
        try:
            self.emit(kind, **fields)
        except Exception:
            log.exception("desktop event %s could not be written", kind)

    def _flush_keys(self) -> None:
        if self._keys and self.window:
            wid, app, title = self.window
            self._send("keys", count=self._keys, app=app, window=wid, title=title)
        self._keys = 0

    def focus(self, wid: str, app: str, title: str) -> None:
        current = (wid, app, redact(title or ""))
        with self._lock:  # send under the lock: a replay cannot slip in between
            if current == self.window:
                return
            self._flush_keys()
            self.window = current
            self._send("window", window=wid, app=app, title=current[2])

    def replay(self) -> None:
        """Write the current window again (a new recording starts with where the agent is)."""
        with self._lock:
            current = self.window
            if current is not None:
                self._send("window", window=current[0], app=current[1], title=current[2])

    def click(self, x: int, y: int, button: int) -> None:
        with self._lock:
            app = self.window[1] if self.window else ""
            wid = self.window[0] if self.window else ""
        self._send("click", x=int(x), y=int(y), button=int(button), app=app, window=wid)

    def key(self) -> None:
        with self._lock:
            now = self._now()
            if not self._keys:
                self._keys_since = now
            self._keys += 1
            if now - self._keys_since >= self.keys_flush_ns:
                self._flush_keys()

    def tick(self) -> None:
        """Called periodically: write a pending key count that is old enough."""
        with self._lock:
            if self._keys and self._now() - self._keys_since >= self.keys_flush_ns:
                self._flush_keys()

    def close(self) -> None:
        with self._lock:
            self._flush_keys()


class DesktopWatcher(abc.ABC):
    """Start/close template: ``start`` launches the platform threads, ``close`` is idempotent."""

    def __init__(self, emit: Emit, *, poll_s: float = 0.025, keys_flush_s: float = 10.0) -> None:
        self.tracker = Tracker(emit, keys_flush_s)
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._started = self._closed = False

    def start(self) -> DesktopWatcher:
        with self._lock:
            if not self._started:
                self._start_impl()
                self._started = True
        return self

    def close(self) -> None:
        with self._lock:
            if self._started and not self._closed:
                self._stop.set()
                self._close_impl()
                for t in self._threads:
                    t.join(3)
                self.tracker.close()
            self._closed = True

    def _thread(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("desktop watcher thread %s died", name)
        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    @abc.abstractmethod
    def _start_impl(self) -> None: ...

    @abc.abstractmethod
    def _close_impl(self) -> None: ...


# --- X11 ------------------------------------------------------------------------------------------
class X11Watcher(DesktopWatcher):
    """X11: active window by ``_NET_ACTIVE_WINDOW`` (event-driven) or input focus (polled);
    clicks and key presses via the RECORD extension (counted, never decoded)."""

    def __init__(self, emit: Emit, display: str | None = None, **kw: Any) -> None:
        super().__init__(emit, **kw)
        try:
            from Xlib import display as xdisplay
            from Xlib.error import DisplayError
        except ImportError as exc:
            raise DesktopUnavailable(f"python-xlib is not installed ({exc})") from None
        self._display_name = display or os.environ.get("DISPLAY")
        if not self._display_name:
            raise DesktopUnavailable("no DISPLAY")
        try:
            self.d = xdisplay.Display(self._display_name)
            self.d_rec = xdisplay.Display(self._display_name)
        except (DisplayError, OSError) as exc:
            raise DesktopUnavailable(f"cannot open X display {self._display_name}: {exc}") from None
        self.root = self.d.screen().root
        self.A = {n: self.d.intern_atom(n) for n in ("_NET_ACTIVE_WINDOW", "_NET_WM_NAME", "UTF8_STRING",
                                                     "WM_NAME", "_NET_WM_PID", "WM_STATE")}
        self.has_record = bool(self.d_rec.has_extension("RECORD"))
        self._rec_ctx: Any = None
        self._watched: Any = None

    def _start_impl(self) -> None:
        from Xlib import X

        self.root.change_attributes(event_mask=X.PropertyChangeMask)
        self.d.flush()
        self._thread(self._focus_loop, "desktop-x11-focus")
        if self.has_record:
            self._start_record()
        else:
            log.warning("X server has no RECORD extension: no clicks or key counts in the operation log")

    def _close_impl(self) -> None:
        if self._threads:
            self._threads[0].join(3)  # the focus thread: then self.d is free for the request below
        if self._rec_ctx is not None:
            try:
                self.d.record_disable_context(self._rec_ctx)
                self.d.flush()
            except Exception:
                log.debug("record_disable_context failed", exc_info=True)
        for t in self._threads:
            t.join(3)
        for d in (self.d, self.d_rec):
            try:
                d.close()
            except Exception:
                log.debug("closing the X connection failed", exc_info=True)

    # focus -------------------------------------------------------------------------------------
    def _prop(self, win: Any, atom: str, type_: int) -> Any:
        try:
            p = win.get_full_property(self.A[atom], type_)
        except Exception:
            return None
        return None if p is None else p.value

    def _top_level(self, win: Any) -> Any:
        """Walk up from the focus window to the child of the root."""
        root_id = self.root.id
        for _ in range(20):
            try:
                tree = win.query_tree()
            except Exception:
                return None
            if tree.parent is None or tree.parent.id in (root_id, 0):
                return win
            win = tree.parent
        return win

    def _client(self, win: Any) -> Any:
        """A window manager frame's client (the window with WM_STATE), else the window itself."""
        from Xlib import X

        if self._prop(win, "WM_STATE", X.AnyPropertyType) is not None:
            return win
        try:
            for child in win.query_tree().children:
                if self._prop(child, "WM_STATE", X.AnyPropertyType) is not None:
                    return child
        except Exception:
            pass
        return win

    def _active(self) -> Any:
        from Xlib import X

        value = self._prop(self.root, "_NET_ACTIVE_WINDOW", X.AnyPropertyType)
        if value is not None and len(value) and value[0]:
            return self.d.create_resource_object("window", int(value[0]))
        focus = self.d.get_input_focus().focus
        if isinstance(focus, int) or focus is None or focus.id in (self.root.id, 0, 1):
            return None
        top = self._top_level(focus)
        return self._client(top) if top is not None else None

    def describe(self, win: Any) -> tuple[str, str, str]:
        from Xlib import X

        title = self._prop(win, "_NET_WM_NAME", self.A["UTF8_STRING"])
        if title is None:
            title = self._prop(win, "WM_NAME", X.AnyPropertyType)
        if isinstance(title, bytes):
            title = title.decode("utf-8", "replace")
        app = ""
        try:
            cls = win.get_wm_class()
            if cls:
                app = cls[1] or cls[0]
        except Exception:
            pass
        if not app:
            pid = self._prop(win, "_NET_WM_PID", X.AnyPropertyType)
            if pid is not None and len(pid):
                try:
                    with open(f"/proc/{int(pid[0])}/comm", encoding="utf-8") as fh:
                        app = fh.read().strip()
                except OSError:
                    pass
        return f"0x{win.id:x}", app, str(title or "")

    def _focus_loop(self) -> None:
        """Cheap when nothing happens: one ``GetInputFocus`` round trip per ``poll_s`` (none with
        a window manager that publishes ``_NET_ACTIVE_WINDOW``: its PropertyNotify wakes us), and
        the window is described again only when it or its title changed."""
        from Xlib import X
        from Xlib.error import ConnectionClosedError

        fd = self.d.fileno()
        net_active = self.A["_NET_ACTIVE_WINDOW"]
        titles = (self.A["_NET_WM_NAME"], self.A["WM_NAME"])
        has_net_active = self._prop(self.root, "_NET_ACTIVE_WINDOW", X.AnyPropertyType) is not None
        last_focus: int | None = None
        dirty = True
        while not self._stop.is_set():
            try:
                while self.d.pending_events():
                    ev = self.d.next_event()
                    if ev.type == X.PropertyNotify:
                        if ev.atom == net_active:
                            has_net_active, dirty = True, True
                        elif ev.atom in titles:
                            dirty = True
                if not has_net_active:
                    focus = self.d.get_input_focus().focus
                    fid = focus if isinstance(focus, int) else getattr(focus, "id", 0)
                    if fid != last_focus:
                        last_focus, dirty = fid, True
                if dirty:
                    dirty = False
                    win = self._active()
                    if win is not None:
                        if self._watched is None or self._watched.id != win.id:
                            with contextlib.suppress(Exception):  # the window may be gone
                                win.change_attributes(event_mask=X.PropertyChangeMask)  # title changes
                            self._watched = win
                        self.tracker.focus(*self.describe(win))
                self.tracker.tick()
                select.select([fd], [], [], self.poll_s)
            except (ConnectionClosedError, OSError, ValueError) as exc:
                log.warning("X display connection lost (%s): the desktop operation log ends", exc)
                return
            except Exception:  # a window vanishing mid-query is normal: retry, never spin
                log.debug("focus query failed", exc_info=True)
                dirty = True
                self._stop.wait(self.poll_s)

    # record ------------------------------------------------------------------------------------
    def _start_record(self) -> None:
        from Xlib import X
        from Xlib.ext import record

        self._rec_ctx = self.d_rec.record_create_context(0, [record.AllClients], [{
            "core_requests": (0, 0), "core_replies": (0, 0), "ext_requests": (0, 0, 0, 0),
            "ext_replies": (0, 0, 0, 0), "delivered_events": (0, 0),
            "device_events": (X.KeyPress, X.ButtonPress), "errors": (0, 0),
            "client_started": False, "client_died": False}])
        self._thread(self._record_loop, "desktop-x11-record")

    def _record_loop(self) -> None:
        from Xlib import X
        from Xlib.ext import record
        from Xlib.protocol import rq

        field = rq.EventField(None)

        def callback(reply: Any) -> None:
            if reply.category != record.FromServer or reply.client_swapped or not len(reply.data):
                return
            data = reply.data
            while len(data):
                event, data = field.parse_binary_value(data, self.d_rec.display, None, None)
                if event.type == X.KeyPress:
                    self.tracker.key()
                elif event.type == X.ButtonPress and event.detail in (1, 2, 3, 8, 9):
                    self.tracker.click(event.root_x, event.root_y, event.detail)

        try:
            self.d_rec.record_enable_context(self._rec_ctx, callback)
        finally:
            try:
                self.d_rec.record_free_context(self._rec_ctx)
            except Exception:
                pass


# --- Windows --------------------------------------------------------------------------------------
class WinApi(Protocol):
    """What :class:`WindowsWatcher` needs of Win32 (a ctypes implementation, or a fake)."""

    def foreground(self) -> int: ...
    def window_title(self, hwnd: int) -> str: ...
    def process_name(self, hwnd: int) -> str: ...
    def install_hooks(self, on_click: Callable[[int, int, int], None],
                      on_key: Callable[[], None]) -> None: ...
    def pump(self, timeout_s: float) -> None: ...
    def remove_hooks(self) -> None: ...


class WindowsWatcher(DesktopWatcher):
    """Windows: ``GetForegroundWindow`` polled; ``WH_MOUSE_LL``/``WH_KEYBOARD_LL`` hooks count
    clicks and key presses (the key code is never read)."""

    def __init__(self, emit: Emit, api: WinApi | None = None, **kw: Any) -> None:
        super().__init__(emit, **kw)
        self.api = api or Win32Api()

    def _start_impl(self) -> None:
        self._thread(self._loop, "desktop-win")

    def _close_impl(self) -> None:
        pass

    def poll_once(self) -> None:
        hwnd = self.api.foreground()
        if hwnd:
            self.tracker.focus(f"0x{hwnd:x}", self.api.process_name(hwnd), self.api.window_title(hwnd))
        self.tracker.tick()

    def _loop(self) -> None:
        # hooks must be installed and pumped on the same thread
        self.api.install_hooks(self.tracker.click, self.tracker.key)
        try:
            while not self._stop.is_set():
                self.poll_once()
                self.api.pump(self.poll_s)
        finally:
            self.api.remove_hooks()


class Win32Api:  # pragma: no cover - runs on Windows only
    """ctypes bindings for :class:`WindowsWatcher`."""

    WM_LBUTTONDOWN, WM_RBUTTONDOWN, WM_MBUTTONDOWN = 0x0201, 0x0204, 0x0207
    WM_KEYDOWN, WM_SYSKEYDOWN = 0x0100, 0x0104

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise DesktopUnavailable("the Win32 API exists on Windows only")
        import ctypes
        from ctypes import wintypes

        self.ct: Any = ctypes
        self.wt: Any = wintypes
        self.user32: Any = ctypes.WinDLL("user32", use_last_error=True)
        self.kernel32: Any = ctypes.WinDLL("kernel32", use_last_error=True)
        self._hooks: list[Any] = []
        self._procs: list[Any] = []

    def foreground(self) -> int:
        return int(self.user32.GetForegroundWindow() or 0)

    def window_title(self, hwnd: int) -> str:
        n = self.user32.GetWindowTextLengthW(hwnd)
        buf = self.ct.create_unicode_buffer(n + 1)
        self.user32.GetWindowTextW(hwnd, buf, n + 1)
        return str(buf.value)

    def process_name(self, hwnd: int) -> str:
        pid = self.wt.DWORD()
        self.user32.GetWindowThreadProcessId(hwnd, self.ct.byref(pid))
        handle = self.kernel32.OpenProcess(0x1000, False, pid.value)  # QUERY_LIMITED_INFORMATION
        if not handle:
            return ""
        try:
            buf = self.ct.create_unicode_buffer(260)
            size = self.wt.DWORD(260)
            if self.kernel32.QueryFullProcessImageNameW(handle, 0, buf, self.ct.byref(size)):
                return os.path.basename(str(buf.value))
            return ""
        finally:
            self.kernel32.CloseHandle(handle)

    def install_hooks(self, on_click: Callable[[int, int, int], None], on_key: Callable[[], None]) -> None:
        ct, wt = self.ct, self.wt

        class MSLLHOOKSTRUCT(ct.Structure):  # type: ignore[misc,name-defined]
            _fields_ = [("pt", wt.POINT), ("mouseData", wt.DWORD), ("flags", wt.DWORD),
                        ("time", wt.DWORD), ("dwExtraInfo", ct.c_void_p)]

        proto = ct.WINFUNCTYPE(ct.c_ssize_t, ct.c_int, wt.WPARAM, wt.LPARAM)
        buttons = {self.WM_LBUTTONDOWN: 1, self.WM_MBUTTONDOWN: 2, self.WM_RBUTTONDOWN: 3}

        def mouse(n_code: int, w_param: int, l_param: int) -> int:
            if n_code == 0 and w_param in buttons:
                info = ct.cast(l_param, ct.POINTER(MSLLHOOKSTRUCT)).contents
                on_click(info.pt.x, info.pt.y, buttons[w_param])
            return int(self.user32.CallNextHookEx(None, n_code, w_param, l_param))

        def keyboard(n_code: int, w_param: int, l_param: int) -> int:
            if n_code == 0 and w_param in (self.WM_KEYDOWN, self.WM_SYSKEYDOWN):
                on_key()  # the KBDLLHOOKSTRUCT (the key) is deliberately not read
            return int(self.user32.CallNextHookEx(None, n_code, w_param, l_param))

        self._procs = [proto(mouse), proto(keyboard)]
        self._hooks = [self.user32.SetWindowsHookExW(14, self._procs[0], None, 0),  # WH_MOUSE_LL
                       self.user32.SetWindowsHookExW(13, self._procs[1], None, 0)]  # WH_KEYBOARD_LL

    def pump(self, timeout_s: float) -> None:
        msg = self.wt.MSG()
        self.user32.MsgWaitForMultipleObjects(0, None, False, int(timeout_s * 1000), 0x04FF)
        while self.user32.PeekMessageW(self.ct.byref(msg), None, 0, 0, 1):
            self.user32.TranslateMessage(self.ct.byref(msg))
            self.user32.DispatchMessageW(self.ct.byref(msg))

    def remove_hooks(self) -> None:
        for h in self._hooks:
            if h:
                self.user32.UnhookWindowsHookEx(h)
        self._hooks, self._procs = [], []


def open_watcher(emit: Emit, **kw: Any) -> DesktopWatcher:
    """The watcher for this platform, or :class:`DesktopUnavailable` saying why there is none."""
    if sys.platform == "win32":
        return WindowsWatcher(emit, **kw)
    if sys.platform.startswith("linux") or os.environ.get("DISPLAY"):
        if os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY"):
            raise DesktopUnavailable("Wayland session without X11 (XWayland) is not supported")
        return X11Watcher(emit, **kw)
    raise DesktopUnavailable(f"platform {sys.platform} is not supported")
