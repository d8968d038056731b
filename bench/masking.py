"""Masking benchmark.

Corpus mode (default): masks every screen of the corpus (``--corpus DIR``; default the 8 screens
committed in tests/data/masking-corpus, one per layout plus two clipped-row cases) with the still-image path
(``station mask-image``'s code) and prints PII items fully hidden (hidden = every ink pixel of
the item, from the 16-bit label map, lies in a masked region), decoys wrongly masked (any ink
pixel masked) and time per frame.

``--generated A:B``: screens drawn by tests/maskgen.py for seeds A..B-1 (layouts, fonts, sizes and
themes outside the corpus; seeds from 1000 on are held out from tuning): customer values not fully
hidden (ink pixels), values Tesseract reads off the masked screen (``--tesseract``), non-customer
items masked (by item and by ink area).

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
CORPUS = ROOT / "tests" / "data" / "masking-corpus"  # a subset of the 30-screen development corpus


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

    screens = sorted(Path(args.corpus).glob("screen_??.png"))
    if not screens:
        print(f"no corpus at {args.corpus}", file=sys.stderr)
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


def generated(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from recorder.masking.masker import mask_image
    from recorder.masking.ocr import get_engine
    from tests import maskgen

    a, b = (int(x) for x in args.generated.split(":"))
    engine = get_engine(args.engine)
    tot = {"screens": 0, "pii": 0, "leaks": 0, "text": 0, "text_masked": 0, "text_ink": 0, "text_ink_masked": 0,
           "tess": 0}
    times = []
    pool = ThreadPoolExecutor(2)
    pending = []
    for seed in range(a, b):
        scr = maskgen.screen(seed)
        t0 = time.perf_counter()
        out, regions = mask_image(scr.image, engine=engine)
        times.append(time.perf_counter() - t0)
        m = region_mask(scr.image.shape[:2], regions)
        s = maskgen.score(scr, m)
        tot["screens"] += 1
        for k in ("pii", "text", "text_ink", "text_ink_masked"):
            tot[k] += s[k]  # type: ignore[operator]
        tot["leaks"] += len(s["leaks"])  # type: ignore[arg-type]
        tot["text_masked"] += len(s["text_masked"])  # type: ignore[arg-type]
        st = f"{scr.layout}/{scr.style['theme']}/{scr.style['size']}px/{'aa' if scr.style['aa'] else 'aliased'}/" \
             f"{Path(str(scr.style['latin'][0])).stem}"  # type: ignore[index]
        if args.verbose:
            for it in s["leaks"]:  # type: ignore[attr-defined]
                print(f"LEAK seed {seed} {st} {it.cls} {it.text!r} {it.box}")
            for it in s["text_masked"]:  # type: ignore[attr-defined]
                print(f"TEXT seed {seed} {st} {it.cls} {it.text!r} {it.box}")
        if args.tesseract:
            pending.append((seed, st, scr, pool.submit(maskgen.tesseract_leaks, scr, out)))
        if args.save:
            cv2.imwrite(str(Path(args.save) / f"gen_{seed}.png"), scr.image)
            cv2.imwrite(str(Path(args.save) / f"gen_{seed}_masked.png"), out)
    for seed, st, _scr, fut in pending:
        found = fut.result()
        tot["tess"] += len(found)
        for it in found:
            print(f"TESSERACT seed {seed} {st} {it.cls} {it.text!r} {it.box}")
    print(f"generated screens: seeds {a}..{b - 1} ({tot['screens']}), engine {args.engine}")
    print(f"customer values not fully hidden (ink pixels): {tot['leaks']} / {tot['pii']}")
    if args.tesseract:
        print(f"customer values Tesseract reads off the masked screens: {tot['tess']} / {tot['pii']}")
    print(f"non-customer items masked: {tot['text_masked']} / {tot['text']} "
          f"({100 * tot['text_masked'] / max(tot['text'], 1):.2f}%), by ink area "
          f"{100 * tot['text_ink_masked'] / max(tot['text_ink'], 1):.2f}%")
    print(f"still path per screen: mean {1000 * np.mean(times):.0f} ms")
    return 0


def live(args: argparse.Namespace) -> int:
    """The scripted Qt work sequence at 15 fps through the MaskFilter, then a plain grab loop."""
    import os

    from recorder.filters import PassThroughFilter
    from recorder.masking.masker import MaskFilter
    from recorder.masking.ocr import get_engine
    from tests import masklive
    from tests.mask_scene import PLANTED

    if not os.environ.get("DISPLAY"):
        print("--live needs an X display (run through ./dev bench masking --live)", file=sys.stderr)
        return 2
    fps, seconds = 15, args.seconds
    filt = MaskFilter(delay_ms=250, engine=get_engine(args.engine))
    proc, info = masklive.start_scene(seconds + 1.0)
    typer = []

    def on_tick(n: int) -> None:
        if n == int(fps * 0.8):
            typer.append(masklive.type_into(info["field"], PLANTED["typed"]))

    run = masklive.grab_through(filt, seconds, fps, on_tick=on_tick)
    proc.wait(timeout=30)
    for t in typer:
        t.wait(timeout=10)
    filt.close()
    s = filt.summary()
    proc2, _ = masklive.start_scene(seconds + 1.0)
    ref = masklive.grab_through(PassThroughFilter(), seconds, fps)
    proc2.wait(timeout=30)
    expected = int(seconds * fps)
    mask_cpu = filt.capture_cpu_s + filt.worker_cpu_s
    print(f"live: {seconds:.0f} s scripted work sequence (table scroll, typing with xdotool, card pop-up, "
          f"window switch) at {fps} fps, delay line 250 ms, engine {filt.engine.name}")
    print(f"capture kept its frame rate: {run.ticks} of {expected} frames grabbed, {run.late} ticks missed "
          f"(reference loop without masking: {ref.ticks} grabbed, {ref.late} missed)")
    print(f"CPU used by masking: {mask_cpu / run.wall_s:.2f} cores ({filt.capture_cpu_s:.1f} s on the capture "
          f"thread, {filt.worker_cpu_s:.1f} s in the OCR worker over {run.wall_s:.1f} s); whole process "
          f"{run.cpu_s / run.wall_s:.2f} cores vs {ref.cpu_s / ref.wall_s:.2f} for the same grab loop without masking")
    push = np.array(run.push_ms)
    print(f"capture-thread time per frame: mean {push.mean():.1f} ms, p95 {np.percentile(push, 95):.1f} ms, "
          f"max {push.max():.1f} ms")
    print(f"frame area masked: mean {100 * s['masked_area_share']:.1f}%, max {100 * s['max_masked_area_share']:.1f}%")
    print(f"masked only because OCR had not finished: mean {100 * s['pending_area_share']:.2f}%, "
          f"max {100 * s['max_pending_area_share']:.1f}%")
    print(f"lines read by OCR: {s['lines_read']}, cache hits: {s['cache_hits']}, frames masked whole: "
          f"{s['frames_masked_whole']}")
    if args.check:
        checked, found = masklive.leaks(run.frames_out, PLANTED, (0, 0, 1700, 720))
        print(f"Tesseract check: {len(found)} of {checked} distinct frames with legible planted PII")
        for seq, hits in sorted(found.items()):
            print(f"  frame {seq}: {len(hits)} values legible")
            if os.environ.get("MASK_DEBUG_DIR"):
                frame = next(f for f in run.frames_out if f.seq == seq)
                cv2.imwrite(os.path.join(os.environ["MASK_DEBUG_DIR"], f"live_{seq}.png"), frame.image[..., :3])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--live", action="store_true", help="real-time run on the X display")
    ap.add_argument("--engine", default="onnx", choices=("onnx", "tesseract"))
    ap.add_argument("--limit", type=int, default=0, help="corpus: only the first N screens")
    ap.add_argument("--corpus", default=str(CORPUS), help="corpus folder (screen_NN.png, .json, "
                    "_labels.png); default: the subset committed in tests/data")
    ap.add_argument("--seconds", type=float, default=20.0, help="live: length of the sequence")
    ap.add_argument("--check", action="store_true", help="live: OCR every distinct frame with Tesseract")
    ap.add_argument("--generated", metavar="A:B", help="screens of tests/maskgen.py for seeds A..B-1 "
                    "(held out from tuning: 1000 and up)")
    ap.add_argument("--tesseract", action="store_true", help="generated: also read the masked screens with Tesseract")
    ap.add_argument("--save", metavar="DIR", help="generated: write the screens and their masked copies here")
    ap.add_argument("-v", "--verbose", action="store_true", help="list leaks and masked decoys")
    args = ap.parse_args()
    if args.live:
        return live(args)
    if args.generated:
        return generated(args)
    return corpus(args)


if __name__ == "__main__":
    sys.exit(main())
