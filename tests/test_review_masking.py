"""Issue 18, "the reviewer can see why": the sealed masking ledger drawn over the screen video and
on the timeline, and the QC figure of evidence lost to masks not yet read (pytest-qt on Xvfb,
real sealed sessions, the real review window and QC)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import nacl.public
import nacl.signing
import pytest

from station.crypto.keys import station_text
from station.review import qc as qcmod
from station.review.audit import ReviewAudit
from station.review.catalog import Catalog
from station.review.session import ReviewSession
from tests import reviewkit as kit
from uploader.stores import LocalFolderStore

SCREEN = (640, 360)
MOBILE = [100, 120, 300, 160]
PENDING = [350, 200, 600, 240]
WINDOW = [20, 250, 200, 330]
# (rule, box, first frame s, last frame s): the recorder's form, monotonic capture times in ns
LEDGER = [("mobile", MOBILE, 0.5, 3.0), ("unresolved", PENDING, 1.0, 2.5), ("window", WINDOW, 0.0, 3.9)]
PINK, PURPLE, TEAL = (0xE9, 0x1E, 0x63), (0x7E, 0x57, 0xC2), (0x00, 0x83, 0x8F)


def make_masked_session(spool: Path, recipients: list[Any], sk: Any, ledger: list[tuple[Any, ...]],
                        seg_s: float = 4.0, fps: int = 10) -> Path:
    """One sealed segment (real encoders, real SessionSealer) whose masking ledger is written as
    the recorder writes it: ``start_ns``/``end_ns`` on the monotonic clock of the session."""
    from station.crypto import SessionSealer

    sid = kit.new_session_id()
    d = spool / sid
    meta = {"agent": "alice", "site": "hq",
            "sources": {"screen": {"width": SCREEN[0], "height": SCREEN[1], "fps": fps}}}
    sealer = SessionSealer(d, sid, "seat-01", recipients, sk, meta=meta)
    t0 = time.monotonic_ns()  # the sealer takes the segment's started_mono_ns right after this
    media = sealer.open_segment(1, "media")
    kit.encode_segment(kit._WriteOnly(media), start_s=0.0, dur_s=seg_s, screen_fps=fps, screen_size=SCREEN)
    sealer.open_segment(1, "oplog").write(b"")
    lines = [{"rule": rule, "box": box, "start_ns": t0 + int(a * 1e9), "end_ns": t0 + int(b * 1e9),
              "frames": int(round((b - a) * fps)) + 1, "confidence": 0.9}
             for rule, box, a, b in ledger]
    sealer.open_segment(1, "masklog").write(b"".join((json.dumps(e) + "\n").encode() for e in lines))
    sealer.close_segment(1, {"start_pts_ms": 0,
                             "streams": {k: {"dropped": 0, "first_pts_ms": 0, "last_pts_ms": int(seg_s * 1000) - 40}
                                         for k in ("screen", "camera", "audio")},
                             "gaps": [], "masking": {"enabled": True}})
    sealer.finish("normal", {"duration_s": seg_s})
    return d


@pytest.fixture(scope="module")
def keys() -> tuple[nacl.public.PrivateKey, nacl.signing.SigningKey]:
    return nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()


def _stored(tmp_path: Path, keys: tuple, ledger: list[tuple[Any, ...]] = LEDGER, **kw: Any) -> tuple[Any, str]:
    ident, sk = keys
    d = make_masked_session(tmp_path / "spool", [bytes(ident.public_key)], sk, ledger, **kw)
    store = LocalFolderStore(tmp_path / "store")
    return store, kit.upload(d, store)


def _session(tmp_path: Path, keys: tuple, **kw: Any) -> ReviewSession:
    ident, sk = keys
    store, folder = _stored(tmp_path, keys, **kw)
    rs = ReviewSession(store, folder, [ident], [station_text(sk.verify_key)], ReviewAudit(store, "", None))
    rs.verify()
    return rs


# --- the ledger in session time ---------------------------------------------------------------

def test_ledger_spans_are_placed_in_session_time_and_pending_ones_are_marked(tmp_path: Path, keys: tuple) -> None:
    rs = _session(tmp_path, keys)
    spans = {m["rule"]: m for m in rs.mask_spans()}
    assert set(spans) == {"mobile", "unresolved", "window"}
    for rule, box, a, b in LEDGER:
        assert spans[rule]["box"] == box
        assert abs(spans[rule]["start_s"] - a) < 0.01 and abs(spans[rule]["end_s"] - b) < 0.01
    assert spans["unresolved"]["pending"] and not spans["mobile"]["pending"] and not spans["window"]["pending"]
    kinds = {(i.kind, i.label) for i in rs.timeline() if i.kind in ("masked", "pending")}
    assert kinds == {("masked", "mobile"), ("pending", "unresolved"), ("masked", "window")}


# --- the overlay on the frame and the timeline ---------------------------------------------------

@pytest.fixture
def window(qtbot, display: str, tmp_path: Path, keys: tuple):  # type: ignore[no-untyped-def]
    from ui.review_window import ReviewSetup, ReviewWindow

    ident, sk = keys
    store, _folder = _stored(tmp_path, keys)
    audit = ReviewAudit(store, "", None)
    setup = ReviewSetup(store=store, catalog=Catalog.for_store(store, tmp_path / "data"), identities=[ident],
                        trusted=[station_text(sk.verify_key)], audit=audit,
                        thresholds=qcmod.Thresholds(consent_required=False), tmp_dir=tmp_path / "tmp")
    w = ReviewWindow(setup, audio=False)
    w.resize(1280, 900)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.refreshed, timeout=20000):
        w.refresh()
    row = w.model.rows[0]
    with qtbot.waitSignal(w.opened, timeout=20000):
        w.open_session(row, reason="masking review")
    yield w
    from ui.review_window import set_language

    set_language("en")


def _near(img: Any, x: float, y: float, rgb: tuple[int, int, int], radius: int = 2, tol: int = 40) -> bool:
    from ui.qt import QColor

    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            px, py = int(round(x)) + dx, int(round(y)) + dy
            if 0 <= px < img.width() and 0 <= py < img.height():
                c = QColor(img.pixel(px, py))
                if max(abs(c.red() - rgb[0]), abs(c.green() - rgb[1]), abs(c.blue() - rgb[2])) <= tol:
                    return True
    return False


def _seek(qtbot, w, t: float) -> Any:  # type: ignore[no-untyped-def]
    w.player.seek(t)
    pane = w.player.screen_pane
    qtbot.waitUntil(lambda: pane.shown_pts is not None and abs(pane.shown_pts - t) < 0.11, timeout=10000)
    return pane


def test_overlay_draws_each_ledger_box_at_its_place_on_the_scaled_frame(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    w = window
    pane = _seek(qtbot, w, 1.5)
    assert w.player.show_masking.isChecked()  # on by default
    assert pane.frame_size == SCREEN
    fr = pane.frame_rect()
    assert fr is not None and abs(fr.width() - SCREEN[0]) > 20  # really scaled: the mapping matters
    img = pane.grab().toImage()
    for box, colour in ((MOBILE, PURPLE), (PENDING, PINK), (WINDOW, TEAL)):
        r = pane.map_box(box)
        mid = r.center().y()
        assert _near(img, r.left(), mid, colour), (box, colour)
        assert _near(img, r.right(), mid, colour), (box, colour)
        assert not _near(img, r.center().x(), mid, colour, radius=1), (box, colour)  # an outline, not a fill
    # where the box would be if capture pixels were taken as pane pixels: nothing drawn there
    r = pane.map_box(PENDING)
    ux, uy = fr.left() + PENDING[0], fr.top() + (PENDING[1] + PENDING[3]) / 2
    assert abs(ux - r.left()) > 8 and not _near(img, ux, uy, PINK, radius=1)


def test_overlay_labels_name_the_rule_and_the_evidence_gap_in_the_windows_language(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    from ui.review_window import set_language

    w = window
    pane = _seek(qtbot, w, 1.5)
    assert sorted((lb, c) for _b, lb, c in pane.shown_masks) == sorted([
        ("mobile number", "#7e57c2"), ("not yet read (evidence gap)", "#e91e63"), ("window rule", "#00838f")])
    set_language("zh_CN")
    w.player._rerender()
    assert sorted(lb for _b, lb, _c in pane.shown_masks) == sorted(["手机号", "尚未识别（证据缺口）", "窗口规则"])
    set_language("en")
    pane = _seek(qtbot, w, 0.3)  # before the unread line appeared
    assert [lb for _b, lb, _c in pane.shown_masks] == ["window rule"]
    img = pane.grab().toImage()
    r = pane.map_box(PENDING)
    assert not _near(img, r.left(), r.center().y(), PINK)


def test_show_masking_toggle_removes_and_restores_the_overlay(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    w = window
    pane = _seek(qtbot, w, 1.5)
    r = pane.map_box(PENDING)
    assert _near(pane.grab().toImage(), r.left(), r.center().y(), PINK)
    w.player.show_masking.setChecked(False)
    assert pane.shown_masks == []
    assert not _near(pane.grab().toImage(), r.left(), r.center().y(), PINK)
    w.player.show_masking.setChecked(True)
    assert len(pane.shown_masks) == 3
    assert _near(pane.grab().toImage(), r.left(), r.center().y(), PINK)


def test_timeline_shows_pending_spans_on_their_own_row_in_their_own_colour(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    w = window
    tl = w.player.timeline
    kinds = {i.kind for i in tl.items}
    assert {"masked", "pending"} <= kinds
    img = tl.grab().toImage()

    def blend(rgb: tuple[int, int, int], under: tuple[int, int, int] = (0xFA,) * 3) -> tuple[int, int, int]:
        a = 170 / 255
        return tuple(int(round(c * a + u * (1 - a))) for c, u in zip(rgb, under, strict=True))  # type: ignore[return-value]

    prow, mrow = tl._row_rect("pending"), tl._row_rect("masked")
    assert prow.top() != mrow.top()
    x_pending = (tl.x_of(1.0) + tl.x_of(2.5)) / 2
    assert _near(img, x_pending, prow.center().y(), blend(PINK), radius=1, tol=25)
    assert not _near(img, tl.x_of(0.5) - 6, prow.center().y(), blend(PINK), radius=1, tol=25)  # before it
    # the window rule (0-3.9 s) and over it the mobile number (0.5-3.0 s) on the masked row, each
    # in its colour: a value is not an evidence gap
    assert _near(img, tl.x_of(0.2), mrow.center().y(), blend(TEAL), radius=1, tol=25)
    assert _near(img, tl.x_of(0.7), mrow.center().y(), blend(PURPLE, blend(TEAL)), radius=1, tol=25)
    assert not _near(img, tl.x_of(0.7), mrow.center().y(), blend(PINK), radius=1, tol=60)


# --- QC: seconds of evidence lost to pending masks ---------------------------------------------------

def test_pending_evidence_is_the_union_in_time_and_the_area_weighted_screen_seconds() -> None:
    spans = [{"rule": "unresolved", "box": [0, 0, 320, 360], "start_s": 1.0, "end_s": 1.9},   # half screen
             {"rule": "context_pending", "box": [0, 0, 64, 36], "start_s": 1.5, "end_s": 2.9},  # 1 %
             {"rule": "unresolved", "box": [0, 0, 640, 360], "start_s": 5.0, "end_s": 5.0},  # one frame
             {"rule": "mobile", "box": [0, 0, 640, 360], "start_s": 0.0, "end_s": 9.9}]      # a value: not lost
    pe = qcmod.pending_evidence(spans, 10.0, (640, 360), frame_s=0.1)
    assert pe["pending_records"] == 3
    assert pe["pending_s"] == pytest.approx(2.0 + 0.1)  # [1.0, 3.0) and [5.0, 5.1)
    assert pe["pending_screen_s"] == pytest.approx(1.0 * 0.5 + 1.5 * 0.01 + 0.1 * 1.0, abs=1e-3)
    assert pe["pending_share"] == pytest.approx(pe["pending_screen_s"] / 10.0, abs=1e-4)
    no_size = qcmod.pending_evidence(spans, 10.0, None, frame_s=0.1)
    assert no_size["pending_screen_s"] is None and no_size["pending_share"] == pytest.approx(0.21)


def test_qc_counts_the_seconds_lost_to_a_known_pending_span_without_flagging_a_small_one(
        tmp_path: Path, keys: tuple) -> None:
    rs = _session(tmp_path, keys)
    r = qcmod.analyse_session(rs, qcmod.Thresholds(consent_required=False))
    assert r.metrics["pending_records"] == 1
    assert r.metrics["pending_s"] == pytest.approx(1.5 + 0.1, abs=0.02)  # 1.0-2.5 s, frames at 10 fps
    share = (PENDING[2] - PENDING[0]) * (PENDING[3] - PENDING[1]) / (SCREEN[0] * SCREEN[1])
    assert r.metrics["pending_screen_s"] == pytest.approx(1.6 * share, abs=0.01)
    assert qcmod.MASKING_PENDING not in r.flags
    assert r.to_json()["metrics"]["pending_s"] == r.metrics["pending_s"]  # stored with the report


def test_qc_flags_a_session_where_much_of_the_screen_stayed_unread(tmp_path: Path, keys: tuple) -> None:
    big = [("mobile", MOBILE, 0.5, 3.0), ("unresolved", [0, 90, 640, 360], 0.0, 3.0)]
    rs = _session(tmp_path, keys, ledger=big)
    r = qcmod.analyse_session(rs, qcmod.Thresholds(consent_required=False))
    assert r.metrics["pending_screen_s"] == pytest.approx(3.1 * 0.75, abs=0.02)
    assert r.metrics["pending_share"] > qcmod.PENDING_MAX_SHARE
    assert qcmod.MASKING_PENDING in r.flags
    assert [(s.start_s, round(s.end_s, 2)) for s in r.spans if s.flag == qcmod.MASKING_PENDING] == \
        [(pytest.approx(0.0, abs=0.01), 3.1)]
    qc_items = [i for i in rs.timeline(r) if i.kind == "qc" and i.label == qcmod.MASKING_PENDING]
    assert len(qc_items) == 1
