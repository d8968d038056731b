"""station mask-image and the still-image path against the development corpus (pixel-exact ground
truth: an item is hidden only if every one of its ink pixels is masked)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from recorder.masking.analysis import Line
from recorder.masking.lines import Box
from recorder.masking.ocr import Reading
from station import cli

CORPUS = Path(__file__).resolve().parent / "data" / "masking-corpus"  # committed subset
SIX_LAYOUTS = ["screen_00", "screen_01", "screen_02", "screen_03", "screen_04", "screen_05"]


def corpus_screen(name: str) -> tuple[Path, dict, np.ndarray]:  # type: ignore[type-arg]
    png = CORPUS / f"{name}.png"
    assert png.exists(), f"corpus screen missing: {png}"
    meta = json.loads(png.with_suffix(".json").read_text("utf-8"))
    labels = cv2.imread(str(CORPUS / f"{name}_labels.png"), cv2.IMREAD_UNCHANGED)
    return png, meta, labels


@pytest.fixture(autouse=True)
def _keep_log_handlers() -> Iterator[None]:
    """cli.main installs a stderr handler on the captured stream; put the old ones back."""
    root = logging.getLogger("dualrec")
    saved, propagate = root.handlers[:], root.propagate
    yield
    root.handlers[:] = saved
    root.propagate = propagate


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    rc = cli.main(["mask-image", *argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


@pytest.mark.parametrize("name", SIX_LAYOUTS)
def test_every_pii_ink_pixel_is_masked_and_decoys_stay_readable(name: str) -> None:
    from recorder.masking.masker import mask_image

    png, meta, labels = corpus_screen(name)
    img = cv2.imread(str(png))
    out, regions = mask_image(img)
    masked = np.zeros(labels.shape, bool)
    for r in regions:
        masked[r.box.y0:r.box.y1, r.box.x0:r.box.x1] = True
    assert (out[masked] == 128).all() and (out[~masked] == img[~masked]).all()
    leaks = [i["text"] for i in meta["items"] if i["kind"] == "pii" and not masked[labels == i["id"]].all()]
    assert leaks == []
    decoys = [i for i in meta["items"] if i["kind"] == "decoy"]
    hit = [i["text"] for i in decoys if masked[labels == i["id"]].any()]
    assert len(hit) <= 0.02 * len(decoys) + 1, hit


# screens whose customer table is cut by the scroll viewport's bottom edge: the last row keeps
# 6-9 px of its glyphs (CJK names a few pixels more than the digits beside them)
CLIPPED_ROW_SCREENS = ["screen_13", "screen_28"]


@pytest.mark.parametrize("name", CLIPPED_ROW_SCREENS)
def test_pii_in_a_row_clipped_at_the_scroll_viewport_edge_is_masked_to_the_last_ink_pixel(name: str) -> None:
    from recorder.masking.masker import mask_image

    png, meta, labels = corpus_screen(name)
    img = cv2.imread(str(png))
    _, regions = mask_image(img)
    masked = np.zeros(labels.shape, bool)
    for r in regions:
        masked[r.box.y0:r.box.y1, r.box.x0:r.box.x1] = True
    pii = [i for i in meta["items"] if i["kind"] == "pii"]
    assert [i for i in pii if i["cls"] == "name" and i["box"][3] - i["box"][1] <= 10], \
        "the clipped row holds a name cut to at most 10 px (full names here are 12-13 px high)"
    leaks = [(i["text"], int((~masked[labels == i["id"]]).sum())) for i in pii if not masked[labels == i["id"]].all()]
    assert leaks == []


def _line(x0: int, y0: int, x1: int, y1: int, text: str) -> Line:
    return Line(Box(x0, y0, x1, y1), x0 - 4, Reading(text, 0.9))


def test_a_row_cut_by_a_viewport_edge_is_masked_whole_but_not_a_full_height_line_sharing_its_top() -> None:
    from recorder.masking.analysis import decide

    lines = [
        _line(295, 949, 330, 962, "陈博俊"), _line(1026, 951, 1085, 963, "2024/11/21"),  # a full row
        _line(1533, 949, 1599, 959, "05-03 00:48"),                                     # side panel
        _line(237, 983, 250, 989, "22"), _line(562, 983, 670, 989, "6217856773.756301"),  # cut strips
        _line(295, 980, 318, 989, "能T"), _line(1026, 980, 1113, 989, "2025年11日16日"),   # cut CJK
        _line(1533, 983, 1599, 993, "05-26 11:28"),  # side panel: top shared, as tall as its column
    ]
    regions = decide(lines, 1920, 1080, ["姓名"])
    clipped = {(r.box.x0 + 2, r.box.y0 + 2) for r in regions if r.rule == "clipped"}
    assert clipped == {(237, 983), (562, 983), (295, 980), (1026, 980)}
    assert not [r for r in regions if r.box.x0 >= 1500], "the side panel's full-height lines stay readable"


def test_cli_writes_masked_png_and_lists_boxes_with_rules(tmp_path: Path, station_home: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    png, meta, labels = corpus_screen("screen_03")
    out = tmp_path / "masked.png"
    before = png.read_bytes()
    rc, result = run_cli(capsys, str(png), str(out))
    assert rc == 0
    assert png.read_bytes() == before, "the input is never modified"
    masked_img = cv2.imread(str(out))
    orig = cv2.imread(str(png))
    assert masked_img.shape == orig.shape
    rules = {m["rule"] for m in result["masked"]}
    assert {"mobile", "id18", "name"} <= rules
    covered = np.zeros(labels.shape, bool)
    for m in result["masked"]:
        x0, y0, x1, y1 = m["box"]
        covered[y0:y1, x0:x1] = True
    assert (masked_img[covered] == 128).all(), "every listed box is masked in the PNG"
    assert (masked_img[~covered] == orig[~covered]).all(), "nothing outside the listed boxes changed"
    for item in meta["items"]:
        if item["kind"] == "pii":
            assert covered[labels == item["id"]].all(), item["text"]


def test_cli_rejects_bad_input_and_keeps_existing_output(tmp_path: Path, station_home: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out.png"
    rc, result = run_cli(capsys, str(garbage), str(out))
    assert rc == 1 and "cannot read image" in result["error"] and not out.exists()

    rc, result = run_cli(capsys, str(tmp_path / "missing.png"), str(out))
    assert rc == 1 and "no such file" in result["error"]

    png, _, _ = corpus_screen("screen_00")
    rc, result = run_cli(capsys, str(png), str(tmp_path / "out.jpg"))
    assert rc == 1 and ".png" in result["error"]

    out.write_bytes(b"keep me")
    rc, result = run_cli(capsys, str(png), str(out))
    assert rc == 1 and "--force" in result["error"]
    assert out.read_bytes() == b"keep me"
    assert not list(tmp_path.glob("*.part"))


def test_tesseract_engine_is_an_alternative_on_the_same_path() -> None:
    from recorder.masking.masker import mask_image
    from recorder.masking.ocr import get_engine

    img = np.full((60, 400, 3), 255, np.uint8)  # screen-sized text (about 15 px high)
    cv2.putText(img, "Tel 13912345678", (10, 35), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    out, regions = mask_image(img, engine=get_engine("tesseract"))
    assert [r.rule for r in regions] == ["mobile"]
    ink = img[..., 0] < 128
    digits_x0 = regions[0].box.x0
    assert (out[..., 0][ink[:, digits_x0:].nonzero()[0], ink[:, digits_x0:].nonzero()[1] + digits_x0] == 128).all()


def test_unknown_engine_is_a_clear_error() -> None:
    from recorder.masking.errors import OcrUnavailable
    from recorder.masking.ocr import get_engine

    with pytest.raises(OcrUnavailable, match="unknown engine"):
        get_engine("easyocr")


def test_ocr_batches_are_capped_by_line_width_and_count_and_cover_every_line_once() -> None:
    """onnxruntime keeps the memory of its largest batch: 16 lines 1800 px wide held ~450 MB for
    the rest of the recording. Batches stay under ``batch_px`` of padded width (a single wider
    line goes alone) and ``max_batch`` lines, in the width order given."""
    from recorder.masking.ocr import get_engine

    eng = get_engine("onnx")
    widths = [40] * 40 + [300, 600, 900, 1800, 2500]
    order = list(range(len(widths)))
    batches = list(eng._batches(order, widths))
    assert [i for b in batches for i in b] == order
    assert all(len(b) <= eng.max_batch for b in batches)
    assert all(len(b) == 1 or len(b) * max(widths[i] for i in b) <= eng.batch_px for b in batches)
    assert [len(b) for b in batches[:3]] == [16, 16, 8] and batches[-1] == [44]
