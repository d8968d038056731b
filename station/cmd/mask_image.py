"""station mask-image IN OUT [--json]"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from station.context import Context
from station.errors import UsageError

HELP = "mask customer data in one screenshot (the recording's masking, without the delay line)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="image to mask (PNG, JPEG, BMP ...)")
    p.add_argument("output", metavar="OUT", help="where to write the masked PNG")
    p.add_argument("--engine", choices=("onnx", "tesseract"), help="OCR engine (default: policy masking.engine)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def run(args: argparse.Namespace, ctx: Context) -> Any:
    import cv2
    import numpy as np

    from recorder.masking.errors import ImageUnreadable
    from recorder.masking.masker import mask_image
    from recorder.masking.ocr import get_engine

    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise ImageUnreadable(str(src), "no such file")
    if dst.suffix.lower() != ".png":
        raise UsageError(f"OUT must be a .png file, not {dst.name!r}")
    if dst.exists() and not args.force:
        raise UsageError(f"{dst} exists (use --force to overwrite)")
    if dst.resolve() == src.resolve():
        raise UsageError("OUT must differ from IN (the unmasked image is kept as given)")
    data = np.frombuffer(src.read_bytes(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageUnreadable(str(src), "not an image OpenCV can decode")
    pol = ctx.policy.masking
    t0 = time.perf_counter()
    masked, regions = mask_image(image, labels=pol.labels, engine=get_engine(args.engine or pol.engine),
                                 style=pol.style)
    seconds = time.perf_counter() - t0
    ok, png = cv2.imencode(".png", masked)
    if not ok:
        raise ImageUnreadable(str(src), "cannot encode the masked image")
    tmp = dst.with_name(dst.name + ".part")
    tmp.write_bytes(png.tobytes())
    tmp.replace(dst)
    by_rule: dict[str, int] = {}
    for r in regions:
        by_rule[r.rule] = by_rule.get(r.rule, 0) + 1
    return {"input": str(src), "output": str(dst), "width": int(image.shape[1]), "height": int(image.shape[0]),
            "seconds": round(seconds, 3), "masked": [{"rule": r.rule, "box": r.box.as_list(),
                                                     "confidence": round(float(r.confidence), 3)} for r in regions],
            "by_rule": by_rule}


def human(result: dict[str, Any]) -> str:
    rules = ", ".join(f"{k} {v}" for k, v in sorted(result["by_rule"].items())) or "nothing found"
    return f"{result['output']}: {len(result['masked'])} regions masked ({rules}) in {result['seconds']:.2f} s"
