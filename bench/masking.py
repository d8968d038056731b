"""Masking benchmark.

Corpus mode (default): masks every screen of ../shared/masking-corpus with the still-image path
(``station mask-image``'s code) and prints PII items fully hidden (hidden = every ink pixel of
the item, from the 16-bit label map, lies in a masked region), decoys wrongly masked (any ink
pixel masked) and time per frame.

``--live``: drives a scripted work sequence of real Qt windows under the current X display,
grabs it with mss at 15 fps through the real-time MaskFilter and prints the CPU used by masking,
the share of frame area masked over time, the share masked only because OCR had not finished,
and whether capture kept its frame rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "masking-corpus"


def region_mask(shape: tuple[int, int], regions) -> np.ndarray:  # type: ignore[no-untyped-def]
    m = np.zeros(shape, bool)
    for r in regions:
        b = r.box
        m[b.y0:b.y1, b.x0:b.x1] = True
    return m


def score_screen(path: Path, engine_name: str = "onnx") -> dict:  # type: ignore[type-arg]
    from recorder.masking.masker import mask_image
    from recorder.masking.ocr import get_engine

    img = cv2.imread(str(path))
    meta = json.loads(path.with_suffix(".json").read_text("utf-8"))
    labels = cv2.imread(str(path.with_name(path.stem + "_labels.png")), cv2.IMREAD_UNCHANGED)
    t0 = time.perf_counter()
    _, regions = mask_image(img, engine=get_engine(engine_name))
    dt = time.perf_counter() - t0
    m = region_mask(img.shape[:2], regions)
    masked_ids = np.bincount(labels[m].ravel(), minlength=65536)
    ink_ids = np.bincount(labels.ravel(), minlength=65536)
    out = {"pii": 0, "pii_hidden": 0, "decoys": 0, "decoys_masked": 0, "seconds": dt,
           "leaks": [], "decoy_hits": [], "masked_share": float(m.mean())}
    for item in meta["items"]:
        iid = item["id"]
        if item["kind"] == "pii":
            out["pii"] += 1
            if masked_ids[iid] == ink_ids[iid]:
                out["pii_hidden"] += 1
            else:
                out["leaks"].append((path.stem, item["cls"], item["text"], int(ink_ids[iid] - masked_ids[iid])))
        elif item["kind"] == "decoy":
            out["decoys"] += 1
            if masked_ids[iid]:
                out["decoys_masked"] += 1
                out["decoy_hits"].append((path.stem, item["cls"], item["text"]))
    return out


def corpus(args: argparse.Namespace) -> int:
    from recorder.masking.ocr import get_engine

    screens = sorted(CORPUS.glob("screen_??.png"))
    if not screens:
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 2
    if args.limit:
        screens = screens[:args.limit]
    get_engine(args.engine)
    tot = {"pii": 0, "pii_hidden": 0, "decoys": 0, "decoys_masked": 0, "seconds": 0.0}
    leaks, hits, times = [], [], []
    cpu0 = time.process_time()
    for s in screens:
        r = score_screen(s, args.engine)
        for k in tot:
            tot[k] += r[k]
        leaks += r["leaks"]
        hits += r["decoy_hits"]
        times.append(r["seconds"])
    cpu = time.process_time() - cpu0
    print(f"screens: {len(screens)}  engine: {args.engine}")
    print(f"PII items fully hidden: {tot['pii_hidden']} / {tot['pii']} "
          f"({100 * tot['pii_hidden'] / max(tot['pii'], 1):.2f}%)")
    print(f"decoys wrongly masked: {tot['decoys_masked']} / {tot['decoys']} "
          f"({100 * tot['decoys_masked'] / max(tot['decoys'], 1):.2f}%)")
    print(f"still path per frame: mean {1000 * np.mean(times):.0f} ms wall, "
          f"p95 {1000 * np.percentile(times, 95):.0f} ms, CPU {1000 * cpu / len(screens):.0f} ms")
    if args.verbose:
        for x in leaks:
            print("LEAK", x)
        for x in hits:
            print("DECOY", x)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--live", action="store_true", help="real-time run on the X display")
    ap.add_argument("--engine", default="onnx", choices=("onnx", "tesseract"))
    ap.add_argument("--limit", type=int, default=0, help="corpus: only the first N screens")
    ap.add_argument("--seconds", type=float, default=20.0, help="live: length of the sequence")
    ap.add_argument("-v", "--verbose", action="store_true", help="list leaks and masked decoys")
    args = ap.parse_args()
    if args.live:
        from bench.masking_live import live  # type: ignore[import-not-found]

        return live(args)
    return corpus(args)


if __name__ == "__main__":
    sys.exit(main())
