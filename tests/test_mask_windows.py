"""Window rules: real X11 windows under Xvfb, listed by X11Windows and masked whole by the
MaskFilter; the Windows implementation behind the same interface with a fake user32."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from recorder.items import VideoFrame
from recorder.masking.lines import Box
from recorder.masking.masker import MaskFilter
from recorder.masking.windows import Win32Windows, WindowInfo, X11Windows, masked_window_boxes, matching


class NoOcr:
    name = "none"

    def read(self, crops):  # type: ignore[no-untyped-def]
        from recorder.masking.ocr import Reading

        return [Reading("", 1.0) for _ in crops]


@pytest.fixture
def x_windows(display: str) -> Iterator[dict[str, Box]]:
    from Xlib import X, Xatom
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    screen = d.screen()
    utf8 = d.intern_atom("UTF8_STRING")
    net_name = d.intern_atom("_NET_WM_NAME")
    made = {}
    specs = [("bankcore", "BankCore", "客户信息 - 核心系统", Box(100, 100, 500, 400), 0xFFFFFF),
             ("notes", "Notes", "todo.txt", Box(700, 100, 1000, 300), 0xEEEEEE)]
    wins = []
    for inst, cls, title, b, bg in specs:
        w = screen.root.create_window(b.x0, b.y0, b.w, b.h, 0, screen.root_depth, X.InputOutput,
                                      X.CopyFromParent, background_pixel=bg)
        w.set_wm_class(inst, cls)
        w.set_wm_name(title.encode("ascii", "replace").decode())
        w.change_property(net_name, utf8, 8, title.encode("utf-8"))
        w.change_property(Xatom.WM_NAME, Xatom.STRING, 8, title.encode("latin-1", "replace"))
        w.map()
        wins.append(w)
        made[cls] = b
    d.sync()
    time.sleep(0.3)
    try:
        yield made
    finally:
        for w in wins:
            w.destroy()
        d.sync()
        d.close()


def test_x11_lists_visible_windows_with_application_title_and_box(x_windows: dict[str, Box]) -> None:
    src = X11Windows()
    try:
        wins = {w.app: w for w in src.windows()}
    finally:
        src.close()
    assert wins["BankCore"].title == "客户信息 - 核心系统"
    assert wins["BankCore"].box == x_windows["BankCore"]
    assert wins["Notes"].box == x_windows["Notes"]


def test_window_rule_masks_the_matching_window_whole_and_nothing_else(x_windows: dict[str, Box]) -> None:
    import mss

    src = X11Windows()
    filt = MaskFilter(delay_ms=0, engine=NoOcr(), window_source=src, window_rules=[r"^BankCore: 客户信息"])
    try:
        with (mss.MSS() if hasattr(mss, "MSS") else mss.mss()) as sct:
            shot = sct.grab(sct.monitors[1])
        raw = np.frombuffer(shot.raw, np.uint8).reshape(shot.height, shot.width, 4).copy()
        out = filt.push(VideoFrame(1, raw.copy(), 0))[0].image
    finally:
        filt.close()
        src.close()
    b = x_windows["BankCore"]
    assert (out[b.y0:b.y1, b.x0:b.x1, :3] == 128).all(), "the whole matching window is masked"
    n = x_windows["Notes"]
    assert (out[n.y0:n.y1, n.x0:n.x1] == raw[n.y0:n.y1, n.x0:n.x1]).all(), "other windows untouched"
    entries = filt.ledger.drain(close_open=True)
    assert [e["box"] for e in entries if e["rule"] == "window"] == [[b.x0, b.y0, b.x1, b.y1]]


def test_rules_match_application_or_title_case_insensitively() -> None:
    wins = [WindowInfo("BankCore", "客户信息", Box(0, 0, 10, 10)), WindowInfo("firefox", "CRM - 张三", Box(0, 0, 5, 5)),
            WindowInfo("Notes", "todo", Box(0, 0, 5, 5))]
    assert [w.app for w in matching(wins, ["bankcore"])] == ["BankCore"]
    assert [w.app for w in matching(wins, [r"CRM"])] == ["firefox"]
    assert matching(wins, []) == []


def test_a_failing_window_source_masks_nothing_extra_and_does_not_raise() -> None:
    class Broken:
        def windows(self):  # type: ignore[no-untyped-def]
            raise OSError("display gone")

    assert masked_window_boxes(Broken(), ["x"], 100, 100) == []


def test_boxes_are_clipped_to_the_frame() -> None:
    class One:
        def windows(self):  # type: ignore[no-untyped-def]
            return [WindowInfo("a", "b", Box(-50, 20, 150, 300))]

    assert masked_window_boxes(One(), ["a"], 100, 100) == [Box(0, 20, 100, 100)]


def test_win32_source_lists_visible_windows_bottom_to_top_with_process_name() -> None:
    class FakeUser32:
        def enum_windows(self):  # type: ignore[no-untyped-def]
            return [1, 2, 3, 4]  # top first, like EnumWindows

        def is_visible(self, h):  # type: ignore[no-untyped-def]
            return h != 3

        def is_iconic(self, h):  # type: ignore[no-untyped-def]
            return h == 4

        def title(self, h):  # type: ignore[no-untyped-def]
            return {1: "客户信息", 2: "Notepad", 3: "hidden", 4: "min"}[h]

        def rect(self, h):  # type: ignore[no-untyped-def]
            return (10 * h, 10, 10 * h + 100, 200)

        def process_image(self, h):  # type: ignore[no-untyped-def]
            return {1: r"C:\\Bank\\BankCore.exe", 2: r"C:\\Windows\\notepad.exe"}.get(h, "")

    wins = Win32Windows(FakeUser32()).windows()
    assert [(w.app, w.title) for w in wins] == [("notepad", "Notepad"), ("BankCore", "客户信息")]
    assert wins[1].box == Box(10, 10, 110, 200)
    assert [w.title for w in matching(wins, [r"^BankCore:"])] == ["客户信息"]
