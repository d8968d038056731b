"""Real-time masking on a real X screen: Qt windows under Xvfb, grabbed with mss, through the
MaskFilter, checked frame by frame with Tesseract (independent of the masker's OCR)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from recorder.items import VideoFrame
from recorder.masking.masker import MaskFilter
from tests import masklive
from tests.mask_scene import PLANTED

SCENE_S = 7.0
CROP = (0, 0, 1700, 720)  # the CRM window, the notes window and the customer card


@pytest.fixture(scope="module")
def live_run(display: str):  # type: ignore[no-untyped-def]
    filt = MaskFilter(delay_ms=250)
    proc, info = masklive.start_scene(SCENE_S)
    typer = None

    def on_tick(n: int) -> None:
        nonlocal typer
        if n == 8:
            typer = masklive.type_into(info["field"], PLANTED["typed"])

    try:
        run = masklive.grab_through(filt, SCENE_S - 0.6, fps=10, keep_raw_every=15, on_tick=on_tick)
    finally:
        proc.wait(timeout=20)
        if typer is not None:
            typer.wait(timeout=10)
        filt.close()
    return filt, run


def test_no_frame_shows_planted_pii_to_tesseract(live_run) -> None:  # type: ignore[no-untyped-def]
    filt, run = live_run
    assert len(run.frames_out) == run.ticks, "the filter returns every frame it was given"
    checked, found = masklive.leaks(run.frames_out, PLANTED, CROP)
    assert checked >= 5, "the scene changed on screen"
    if found and os.environ.get("MASK_DEBUG_DIR"):
        import cv2

        for f in run.frames_out:
            if f.seq in found:
                cv2.imwrite(os.path.join(os.environ["MASK_DEBUG_DIR"], f"leak_{f.seq}.png"), f.image[..., :3])
    assert found == {}, f"legible PII in frames {found}"
    summary = filt.summary()
    assert summary["frames"] == run.ticks
    assert summary["masked_area_share"] > 0


def test_raw_frames_of_the_same_run_do_show_the_pii(live_run) -> None:  # type: ignore[no-untyped-def]
    """Control: the oracle does read the planted values when nothing masks them."""
    _, run = live_run
    x0, y0, x1, y1 = CROP
    hits = set()
    for raw in run.raw_samples[1:3]:
        hits |= set(masklive.legible(masklive.tesseract_text(raw[y0:y1, x0:x1, :3]), PLANTED))
    assert len(hits) >= 3, hits


def test_ledger_records_rules_spans_and_hashes_not_values(live_run) -> None:  # type: ignore[no-untyped-def]
    filt, run = live_run
    entries = filt.ledger.drain(close_open=True)
    rules = {e["rule"] for e in entries}
    assert {"mobile", "bank_card"} <= rules, rules
    text = repr(entries)
    for value in PLANTED["mobiles"] + PLANTED["cards"] + [PLANTED["id"]]:
        assert value not in text
    for e in entries:
        assert e["end_ns"] >= e["start_ns"] and e["frames"] >= 1 and len(e["box"]) == 4
        if e["rule"] in ("mobile", "bank_card", "id18"):
            assert len(e["value_hash"]) == 32


def test_unread_text_is_masked_until_ocr_clears_it() -> None:
    """With OCR stalled, every text line of a frame is masked when the frame leaves (fail closed)."""

    class Stalled:
        name = "stalled"

        def read(self, crops):  # type: ignore[no-untyped-def]
            time.sleep(30)
            return []

    img = np.full((200, 400, 4), 255, np.uint8)
    import cv2

    cv2.putText(img, "13912345678", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0, 255), 2)
    filt = MaskFilter(delay_ms=0, engine=Stalled())
    out = filt.push(VideoFrame(1, img.copy(), 0))
    assert len(out) == 1
    ink = img[..., 0] < 128
    assert (out[0].image[..., 0][ink] == 128).all(), "every ink pixel hidden"
    assert filt.summary()["regions_by_rule"].get("unresolved") == 1


def test_analysis_error_masks_the_whole_frame_and_says_so() -> None:
    filt = MaskFilter(delay_ms=0)
    bad = VideoFrame(1, np.zeros((10, 10), np.float64), 0)  # not an image the masker understands
    bad.image = np.full((40, 40, 4), 200, np.uint8)
    filt._analyse = lambda item: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    out = filt.push(bad)
    assert (out[0].image == 128).all()
    s = filt.summary()
    assert s["frames_failed"] == 1 and s["frames_masked_whole"] == 1
    assert filt.ledger.drain(close_open=True)[0]["rule"] == "frame_error"
    filt.close()


def test_delay_line_holds_frames_for_delay_ms() -> None:
    filt = MaskFilter(delay_ms=200)
    img = np.full((48, 64, 4), 255, np.uint8)
    got = []
    for k in range(10):
        got += [f.seq for f in filt.push(VideoFrame(k * 50_000_000, img.copy(), k))]
    assert got == [0, 1, 2, 3, 4, 5]  # frame k leaves once frame k+4 (200 ms later) arrived
    assert [f.seq for f in filt.flush()] == [6, 7, 8, 9]
    filt.close()


def test_flush_stops_the_ocr_worker_and_a_later_push_restarts_it() -> None:
    import threading

    filt = MaskFilter(delay_ms=0)
    img = np.full((48, 64, 4), 255, np.uint8)
    filt.push(VideoFrame(0, img.copy(), 0))
    filt.flush()
    assert not [t for t in threading.enumerate() if t is filt._worker and t.is_alive()]
    filt.push(VideoFrame(1, img.copy(), 1))
    assert filt._worker.is_alive()
    filt.close()
    assert filt.summary()["worker_ok"]


def test_make_filter_takes_delay_labels_engine_style_and_window_rules_from_policy() -> None:
    from recorder.filters import make_screen_filter
    from recorder.masking import make_filter
    from station.policy import Policy

    class NoWindows:
        def windows(self):  # type: ignore[no-untyped-def]
            return []

    pol = Policy.defaults().replace(masking__delay_ms=100, masking__labels=["投保人"], masking__style="blur",
                                    masking__window_rules=["^BankCore:"])
    filt = make_filter(pol, window_source=NoWindows(), salt=b"s" * 32)
    try:
        assert filt.delay_ns == 100_000_000 and filt.labels == ["投保人"] and filt.style == "blur"
        assert filt.window_rules == ["^BankCore:"] and filt.engine.name == "onnx"
    finally:
        filt.close()
    via_hook = make_screen_filter(pol, window_source=NoWindows())
    try:
        assert isinstance(via_hook, MaskFilter), "the recorder's hook finds recorder.masking.make_filter"
    finally:
        via_hook.close()
    off = make_screen_filter(Policy.defaults().replace(masking__enabled=False))
    assert not isinstance(off, MaskFilter)
