"""Window rules: windows whose 'application: title' matches a policy regex are masked whole.

A :class:`WindowSource` lists the visible top-level windows, bottom to top, as
:class:`WindowInfo` (application, title, box in screen pixels). Implementations:

* :class:`X11Windows` (Linux) with python-xlib: the window manager's ``_NET_CLIENT_LIST_STACKING``
  when there is one, else the root window's children (stacking order), each resolved to the
  client window carrying ``WM_CLASS`` / ``_NET_WM_NAME``.
* :class:`Win32Windows` (Windows) with ctypes ``EnumWindows`` / ``GetWindowTextW`` /
  ``GetWindowRect`` and the process image name; same interface, unit-tested with fakes here.

Listing windows costs a few X round trips, so :func:`masked_window_boxes` caches the list for
200 ms. A source that fails masks nothing by itself, but the failure is logged and counted
(content masking still runs on every pixel).
"""

from __future__ import annotations

import ntpath
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from recorder.masking.lines import Box
from station import logs

log = logs.get("mask")
CACHE_S = 0.2


@dataclass(frozen=True, slots=True)
class WindowInfo:
    app: str
    title: str
    box: Box  # x0, y0, x1, y1 in screen pixels

    @property
    def subject(self) -> str:
        return f"{self.app}: {self.title}"


class WindowSource(Protocol):
    def windows(self) -> list[WindowInfo]: ...


def compile_rules(rules: Sequence[str]) -> list[re.Pattern[str]]:
    return [re.compile(r, re.IGNORECASE) for r in rules]


def matching(windows: Sequence[WindowInfo], rules: Sequence[str | re.Pattern[str]]) -> list[WindowInfo]:
    pats = [r if isinstance(r, re.Pattern) else re.compile(r, re.IGNORECASE) for r in rules]
    return [w for w in windows if any(p.search(w.subject) for p in pats)]


_cache_lock = threading.Lock()
_cache: dict[int, tuple[float, list[Box]]] = {}


def masked_window_boxes(source: WindowSource, rules: Sequence[str], width: int, height: int,
                        origin: tuple[int, int] = (0, 0)) -> list[Box]:
    """Boxes (frame pixels) of windows matching ``rules``; cached for 200 ms per source."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(id(source))
        if hit and now - hit[0] < CACHE_S:
            return hit[1]
    try:
        wins = matching(source.windows(), rules)
    except Exception as exc:
        log.warning("listing windows failed: %s", exc)
        wins = []
    ox, oy = origin
    boxes = []
    for w in wins:
        b = Box(max(0, w.box.x0 - ox), max(0, w.box.y0 - oy), min(width, w.box.x1 - ox), min(height, w.box.y1 - oy))
        if b.w > 0 and b.h > 0:
            boxes.append(b)
    with _cache_lock:
        _cache[id(source)] = (now, boxes)
    return boxes


class X11Windows:
    """Visible top-level windows of an X display (python-xlib)."""

    def __init__(self, display: str | None = None) -> None:
        from Xlib import display as xdisplay

        self._d = xdisplay.Display(display or os.environ.get("DISPLAY"))
        self._root = self._d.screen().root
        self._lock = threading.Lock()
        self._atoms = {n: self._d.intern_atom(n) for n in
                       ("_NET_CLIENT_LIST_STACKING", "_NET_WM_NAME", "UTF8_STRING", "WM_STATE")}

    def close(self) -> None:
        self._d.close()

    def _name(self, win: Any) -> str:
        try:
            prop = win.get_full_property(self._atoms["_NET_WM_NAME"], self._atoms["UTF8_STRING"])
            if prop is not None and prop.value:
                v = prop.value
                return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            name = win.get_wm_name()
            if isinstance(name, bytes):
                return name.decode("latin-1")
            return name or ""
        except Exception:
            return ""

    def _client(self, win: Any, depth: int = 0) -> Any:
        """The window carrying WM_CLASS at or below ``win`` (a WM frame holds the client)."""
        try:
            if win.get_wm_class() is not None:
                return win
        except Exception:
            return None
        if depth >= 2:
            return None
        try:
            for child in win.query_tree().children:
                c = self._client(child, depth + 1)
                if c is not None:
                    return c
        except Exception:
            return None
        return None

    def windows(self) -> list[WindowInfo]:
        from Xlib import X

        with self._lock:
            stacking = self._root.get_full_property(self._atoms["_NET_CLIENT_LIST_STACKING"], X.AnyPropertyType)
            if stacking is not None and len(stacking.value):
                tops = [self._d.create_resource_object("window", int(w)) for w in stacking.value]
            else:
                tops = list(self._root.query_tree().children)
            out = []
            for top in tops:
                try:
                    if top.get_attributes().map_state != X.IsViewable:
                        continue
                    client = self._client(top)
                    if client is None:
                        continue
                    geo = top.get_geometry()
                    pos = top.translate_coords(self._root, 0, 0)
                    x, y = -pos.x, -pos.y
                    cls = client.get_wm_class() or ("", "")
                    app = cls[1] or cls[0]
                    out.append(WindowInfo(app, self._name(client), Box(x, y, x + geo.width, y + geo.height)))
                except Exception:  # a window closed while we looked at it
                    continue
            return out


class Win32Windows:
    """Visible top-level windows on Windows (ctypes, user32/kernel32). Same interface as X11Windows."""

    def __init__(self, api: Any = None) -> None:
        self._api = api or _Win32Api()

    def windows(self) -> list[WindowInfo]:
        api = self._api
        out = []
        for hwnd in api.enum_windows():  # top to bottom (Z order)
            if not api.is_visible(hwnd) or api.is_iconic(hwnd):
                continue
            title = api.title(hwnd)
            x0, y0, x1, y1 = api.rect(hwnd)
            if x1 <= x0 or y1 <= y0:
                continue
            app = ntpath.splitext(ntpath.basename(api.process_image(hwnd) or ""))[0]
            out.append(WindowInfo(app, title, Box(x0, y0, x1, y1)))
        out.reverse()  # bottom to top, like X11Windows
        return out


class _Win32Api:  # pragma: no cover - exercised on Windows only
    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        self.ct, self.wt = ctypes, wintypes
        self.user32 = ctypes.windll.user32  # type: ignore[attr-defined]
        self.kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]

    def enum_windows(self) -> list[int]:
        hwnds: list[int] = []

        def collect(h: int, _l: int) -> bool:
            hwnds.append(h)
            return True

        proc = self.ct.WINFUNCTYPE(self.wt.BOOL, self.wt.HWND, self.wt.LPARAM)(collect)  # type: ignore[attr-defined]
        self.user32.EnumWindows(proc, 0)
        return hwnds

    def is_visible(self, h: int) -> bool:
        return bool(self.user32.IsWindowVisible(h))

    def is_iconic(self, h: int) -> bool:
        return bool(self.user32.IsIconic(h))

    def title(self, h: int) -> str:
        n = self.user32.GetWindowTextLengthW(h)
        buf = self.ct.create_unicode_buffer(n + 1)
        self.user32.GetWindowTextW(h, buf, n + 1)
        return buf.value

    def rect(self, h: int) -> tuple[int, int, int, int]:
        r = self.wt.RECT()
        self.user32.GetWindowRect(h, self.ct.byref(r))
        return r.left, r.top, r.right, r.bottom

    def process_image(self, h: int) -> str:
        pid = self.wt.DWORD()
        self.user32.GetWindowThreadProcessId(h, self.ct.byref(pid))
        hp = self.kernel32.OpenProcess(0x1000, False, pid.value)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not hp:
            return ""
        try:
            buf = self.ct.create_unicode_buffer(1024)
            size = self.wt.DWORD(1024)
            self.kernel32.QueryFullProcessImageNameW(hp, 0, buf, self.ct.byref(size))
            return buf.value
        finally:
            self.kernel32.CloseHandle(hp)


def default_window_source() -> WindowSource | None:
    """The platform's window source, or None (logged) when there is none."""
    try:
        if sys.platform == "win32":
            return Win32Windows()
        if os.environ.get("DISPLAY"):
            return X11Windows()
    except Exception as exc:
        log.warning("no window source: %s", exc)
    return None
