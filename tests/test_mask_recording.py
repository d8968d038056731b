"""End to end: `station record` with masking enabled records a scripted work sequence of real Qt
windows under Xvfb (a table scrolled, a form filled in by typing with xdotool, a customer card
popping up, windows switched); the reviewer decrypts and decodes the sealed segments in memory and
Tesseract reads every distinct frame: no planted PII string may be legible in any of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import masklive
from tests.mask_scene import PLANTED
from tests.recordkit import decode_media, make_station, plaintext, session_segments

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SECONDS = 7.0
CROP = (0, 0, 1700, 720)


def test_recording_of_a_work_sequence_shows_no_legible_pii_in_any_frame(
        display: str, audio_sink: object, keyring_service: str, station_home: Path) -> None:
    st = make_station(station_home, **{"masking.enabled": True, "masking.delay_ms": 250,
                                       "capture.segment_seconds": 60})
    scene, info = masklive.start_scene(SECONDS + 2.0)
    rec = subprocess.Popen([sys.executable, "-m", "station.cli", "record", "--json", "--policy", str(st.policy_path),
                            "--data-dir", str(st.home), "--duration", f"{SECONDS:g}", "--monitor", "1",
                            "--camera", "", "--mic", "pulse"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    typer = masklive.type_into(info["field"], PLANTED["typed"])
    out, err = rec.communicate(timeout=SECONDS + 90)
    typer.wait(timeout=10)
    scene.wait(timeout=30)
    assert rec.returncode == 0, err.decode()[-3000:]
    result = json.loads(out)
    sdir = Path(result["session_dir"])

    x0, y0, x1, y1 = CROP
    distinct = masklive.Distinct()

    def keep(frame) -> None:  # type: ignore[no-untyped-def]
        distinct.offer(len(distinct.kept), frame.to_ndarray(format="bgr24")[y0:y1, x0:x1])

    n_frames = 0
    ledger: list[dict] = []  # type: ignore[type-arg]
    for seq in session_segments(sdir):
        data, complete = plaintext(sdir / f"seg-{seq:06d}.media.drseg", st.identity)
        assert complete
        n_frames += len(decode_media(data, keep_screen=keep, keep_audio=False).screen_pts_ms)
        mdata, _ = plaintext(sdir / f"seg-{seq:06d}.masklog.drseg", st.identity)
        ledger += [json.loads(x) for x in mdata.decode().splitlines() if x.strip()]
        manifest = json.loads((sdir / f"seg-{seq:06d}.manifest.json").read_text("utf-8"))
        masking = json.dumps(manifest)
        assert '"frames_masked_whole"' in masking and '"regions_by_rule"' in masking
    assert n_frames >= 0.8 * 15 * SECONDS, (result["streams"], result["errors"])
    print(f"\nMASKED RECORDING: {n_frames} screen frames, {result['streams']['screen']['dropped']} dropped, "
          f"masking summary {manifest['stats']['masking'] if 'stats' in manifest else masking[:200]}")
    kept = [img for _, img in distinct.kept]
    assert len(kept) >= 5, "the work sequence changed the screen"

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        texts = list(pool.map(masklive.tesseract_text, kept))
    leaks = {k: masklive.legible(t, PLANTED) for k, t in enumerate(texts)}
    leaks = {k: v for k, v in leaks.items() if v}
    if leaks and os.environ.get("MASK_DEBUG_DIR"):
        import cv2

        for k in leaks:
            cv2.imwrite(os.path.join(os.environ["MASK_DEBUG_DIR"], f"rec_{k}.png"), kept[k])
    assert leaks == {}, f"{len(leaks)} of {len(kept)} distinct frames show PII: {leaks}"

    rules = {e["rule"] for e in ledger}
    assert {"mobile", "bank_card"} <= rules, rules
    # the ledger's capture times are on the recorder's clock, whose origin the manifest carries
    # (meta.mono_t0_ns): every record lies within the recording on the session clock, which is
    # where the review window draws it
    t0 = manifest["meta"]["mono_t0_ns"]
    summary = json.loads((sdir / "session.json").read_text("utf-8"))["summary"]
    first, dur = summary["start_pts_ms"] / 1000, summary["duration_s"]
    placed = [((e["start_ns"] - t0) / 1e9, (e["end_ns"] - t0) / 1e9) for e in ledger]
    assert all(first - 0.001 <= a <= b <= first + dur + 0.3 for a, b in placed), placed[:5]
    sealed = json.dumps(ledger, ensure_ascii=False)
    for value in PLANTED["mobiles"] + PLANTED["cards"] + [PLANTED["id"], PLANTED["email"]]:
        assert value not in sealed, "the ledger holds hashes, never values"
