"""Automatic quality checks (QC) of a recorded session, computed once on the reviewer side.

The seat cannot decrypt what it recorded, so QC runs where a reviewer identity is available
(``station sessions --remote --qc`` or the review window): it decodes the session once, measures

* the share of camera time with a face (OpenCV Haar cascade, sampled at ``CAMERA_SAMPLE_HZ``),
* the share of camera time that is black or covered,
* the shares of silent and clipped audio,
* the audio/video start offset,
* drops and gaps reported in the segment manifests,
* required script steps (policy ``session.required_steps``) present and in order, consent,
* the masking summary from the manifests, and from the sealed masking ledger the seconds of
  evidence lost to masks of lines not yet read (:func:`pending_evidence`),

and compares them with the policy thresholds ``qc.*``. The result (:class:`QcReport`, a JSON
document) is sealed for the session's own recipients and stored beside the session as
``qc.json.drseg`` (see :mod:`station.review.catalog`), so the catalog can flag failing sessions
without decoding media again.

The analysis classes take decoded numpy frames and samples and know nothing about storage or
containers; :func:`analyse_session` wires them to the playback engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from station.clock import utc_now_iso

QC_VERSION = 1
QC_FILE = "qc.json.drseg"
CAMERA_SAMPLE_HZ = 2.0      # face / black checks per second of camera time
AUDIO_WINDOW_S = 0.05       # silence is judged per 50 ms window
SILENCE_DBFS = -50.0        # a window quieter than this is silent
CLIP_LEVEL = 0.985          # |sample| at or above this (full scale 1.0) is clipped
BLACK_MEAN_MAX = 28.0       # mean luma of a covered / black camera frame
BLACK_STD_MAX = 12.0        # ... and its spread (a dark but textured room is not "covered")
FACE_WIDTH_PX = 320         # frames are scaled to this width before face detection

# Flags a session can carry; the catalog filters on them.
NO_FACE = "no-face"
CAMERA_COVERED = "camera-covered"
SILENCE = "silence"
CLIPPING = "clipping"
AV_OFFSET = "av-offset"
DROPS = "drops"
GAPS = "gaps"
MISSING_STEP = "missing-step"
STEPS_OUT_OF_ORDER = "steps-out-of-order"
NO_CONSENT = "no-consent"
NO_CAMERA = "no-camera"
NO_AUDIO = "no-audio"
NOT_INTACT = "not-intact"
CRASH_RECOVERED = "crash-recovered"  # ended by a crash, complete up to it: not a tampering flag
MASKING_PENDING = "masking-pending"  # too much of the screen masked only because OCR had not read it
ALL_FLAGS = (NO_FACE, CAMERA_COVERED, SILENCE, CLIPPING, AV_OFFSET, DROPS, GAPS, MISSING_STEP,
             STEPS_OUT_OF_ORDER, NO_CONSENT, NO_CAMERA, NO_AUDIO, NOT_INTACT, CRASH_RECOVERED,
             MASKING_PENDING)

# Masking ledger rules that hide no known value: a line not read by OCR yet (masked fail-closed)
# and a line whose context was still being decided. Time under them is evidence lost, not protected.
PENDING_RULES = ("unresolved", "context_pending")
PENDING_MAX_SHARE = 0.05    # flag masking-pending above 5 % of the session (see pending_evidence)
PENDING_MIN_S = 2.0         # ... and never for less than 2 s of lost screen-seconds
DEFAULT_FRAME_S = 1 / 15    # a ledger record's last frame stays shown this long if fps is unknown


@dataclass(frozen=True)
class Thresholds:
    face_min_share: float = 0.6
    black_max_share: float = 0.1
    silence_max_share: float = 0.6
    clip_max_share: float = 0.01
    av_offset_max_ms: int = 200
    required_steps: tuple[str, ...] = ()
    consent_required: bool = True

    @classmethod
    def from_policy(cls, policy: Any) -> Thresholds:
        q = policy.qc
        return cls(face_min_share=q.face_min_share, black_max_share=q.black_max_share,
                   silence_max_share=q.silence_max_share, clip_max_share=q.clip_max_share,
                   av_offset_max_ms=q.av_offset_max_ms,
                   required_steps=tuple(policy.session.required_steps),
                   consent_required=bool(policy.session.consent_required))


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def is_black(gray: np.ndarray) -> bool:
    """A covered lens or a dead camera: dark and nearly uniform."""
    small = gray[::4, ::4]
    return float(small.mean()) < BLACK_MEAN_MAX and float(small.std()) < BLACK_STD_MAX


class FaceDetector:
    """Frontal face present in a frame (OpenCV's Haar cascade, shipped inside OpenCV)."""

    def __init__(self) -> None:
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the face cascade {path}")

    def has_face(self, gray: np.ndarray) -> bool:
        import cv2

        h, w = gray.shape[:2]
        if w > FACE_WIDTH_PX:
            gray = cv2.resize(gray, (FACE_WIDTH_PX, max(1, round(h * FACE_WIDTH_PX / w))),
                              interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        faces = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24))
        return len(faces) > 0


@dataclass
class Span:
    """A stretch of session time [start_s, end_s) carrying a QC flag (drawn on the timeline)."""

    flag: str
    start_s: float
    end_s: float


def _spans(flag: str, marks: Sequence[tuple[float, bool]], step_s: float) -> list[Span]:
    out: list[Span] = []
    for t, on in marks:
        if not on:
            continue
        if out and t - out[-1].end_s <= step_s * 1.5:
            out[-1].end_s = t + step_s
        else:
            out.append(Span(flag, t, t + step_s))
    return out


@dataclass
class CameraQc:
    """Feed decoded camera frames in time order; samples them at ``sample_hz``."""

    sample_hz: float = CAMERA_SAMPLE_HZ
    detector: FaceDetector | None = None
    samples: int = 0
    faces: int = 0
    blacks: int = 0
    first_pts_s: float | None = None
    _next_s: float = -math.inf
    _face_marks: list[tuple[float, bool]] = field(default_factory=list)
    _black_marks: list[tuple[float, bool]] = field(default_factory=list)

    def wants(self, t_s: float) -> bool:
        """Whether a frame at t_s would be sampled (lets callers skip colour conversion)."""
        return t_s >= self._next_s

    def add(self, frame: np.ndarray, t_s: float) -> None:
        if self.first_pts_s is None:
            self.first_pts_s = t_s
        if not self.wants(t_s):
            return
        self._next_s = max(self._next_s + 1 / self.sample_hz, t_s) if self._next_s > -math.inf \
            else t_s + 1 / self.sample_hz
        if self.detector is None:
            self.detector = FaceDetector()
        gray = _gray(frame)
        black = is_black(gray)
        face = (not black) and self.detector.has_face(gray)
        self.samples += 1
        self.blacks += black
        self.faces += face
        self._black_marks.append((t_s, black))
        self._face_marks.append((t_s, not face and not black))

    @property
    def face_share(self) -> float | None:
        return self.faces / self.samples if self.samples else None

    @property
    def black_share(self) -> float | None:
        return self.blacks / self.samples if self.samples else None

    def spans(self) -> list[Span]:
        step = 1 / self.sample_hz
        return _spans(CAMERA_COVERED, self._black_marks, step) + _spans(NO_FACE, self._face_marks, step)


@dataclass
class AudioQc:
    """Feed decoded audio blocks in time order (float in [-1, 1] or int16; any channel count)."""

    windows: int = 0
    silent_windows: int = 0
    samples: int = 0
    clipped: int = 0
    first_pts_s: float | None = None
    rate_hz: int = 0
    _carry: np.ndarray | None = None
    _carry_t: float = 0.0
    _silent_marks: list[tuple[float, bool]] = field(default_factory=list)

    def add(self, block: np.ndarray, rate_hz: int, t_s: float) -> None:
        x = np.asarray(block)
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        elif x.dtype != np.float32:
            x = x.astype(np.float32)
        if x.ndim == 2:
            x = np.abs(x).max(axis=1) if x.shape[1] > 1 else x[:, 0]
        if self.first_pts_s is None:
            self.first_pts_s = t_s
        self.rate_hz = rate_hz
        self.samples += x.size
        self.clipped += int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
        if self._carry is not None and self._carry.size:
            x = np.concatenate([self._carry, x])
            t_s = self._carry_t
        win = max(1, int(rate_hz * AUDIO_WINDOW_S))
        n = x.size // win
        if n:
            rms = np.sqrt(np.mean(np.square(x[: n * win].reshape(n, win), dtype=np.float64), axis=1))
            silent = rms < 10 ** (SILENCE_DBFS / 20)
            self.windows += n
            self.silent_windows += int(silent.sum())
            for i in range(n):
                self._silent_marks.append((t_s + i * AUDIO_WINDOW_S, bool(silent[i])))
        self._carry = x[n * win:]
        self._carry_t = t_s + n * AUDIO_WINDOW_S

    @property
    def silent_share(self) -> float | None:
        return self.silent_windows / self.windows if self.windows else None

    @property
    def clipped_share(self) -> float | None:
        return self.clipped / self.samples if self.samples else None

    def spans(self, min_s: float = 2.0) -> list[Span]:
        """Silent stretches of at least min_s (shorter pauses in speech are normal)."""
        spans = _spans(SILENCE, self._silent_marks, AUDIO_WINDOW_S)
        return [s for s in spans if s.end_s - s.start_s >= min_s]


# --- operation log: script steps and consent --------------------------------------------------

STEP_KINDS = ("script_step", "step", "script-step", "script.step")
CONSENT_KINDS = ("consent", "consent_given", "consent-given", "consent.given")
REFUSALS = (False, "no", "refused", "declined")


def event_kind(event: Mapping[str, Any]) -> str:
    """The event's kind; a recorder marker (``kind: marker, marker: script_step``) counts as its
    marker kind."""
    kind = str(event.get("kind") or event.get("type") or event.get("event") or "")
    if kind == "marker" and event.get("marker"):
        return str(event["marker"])
    return kind


def step_name(event: Mapping[str, Any]) -> str | None:
    """The script step an operation-log event marks, if any."""
    if event_kind(event) in STEP_KINDS:
        name = event.get("step") or event.get("label") or event.get("name") or event.get("id")
        return str(name) if name else None
    return None


def is_consent(event: Mapping[str, Any]) -> bool:
    """An event recording the customer's consent (given, not refused)."""
    if event_kind(event) not in CONSENT_KINDS:
        return False
    answer = event.get("label", event.get("accepted", event.get("granted", event.get("given", True))))
    return answer not in REFUSALS


def check_steps(step_events: Sequence[str], required: Sequence[str]) -> dict[str, Any]:
    """Required steps present, and in the required order (first occurrence of each)."""
    first: dict[str, int] = {}
    for i, name in enumerate(step_events):
        first.setdefault(name, i)
    missing = [s for s in required if s not in first]
    present = [s for s in required if s in first]
    order = sorted(present, key=lambda s: first[s])
    return {"required": list(required), "seen": list(dict.fromkeys(step_events)), "missing": missing,
            "in_order": order == present, "order_seen": order}


# --- manifests: drops, gaps, masking -----------------------------------------------------------

def _sum_key(obj: Any, names: tuple[str, ...]) -> int:
    if isinstance(obj, Mapping):
        total = 0
        for k, v in obj.items():
            if k in names and isinstance(v, (int, float)) and not isinstance(v, bool):
                total += int(v)
            else:
                total += _sum_key(v, names)
        return total
    if isinstance(obj, list):
        return sum(_sum_key(v, names) for v in obj)
    return 0


def manifest_summary(stats_list: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Drops, gaps and masking totals over the segments' manifest ``stats``."""
    drops = 0
    gaps: list[Any] = []
    masking: dict[str, float] = {}
    for stats in stats_list:
        drops += _sum_key(stats, ("dropped", "drops", "frames_dropped", "overflows"))
        g = stats.get("gaps")
        if isinstance(g, list):
            gaps.extend(g)
        elif isinstance(g, (int, float)) and g:
            gaps.extend([{}] * int(g))
        m = stats.get("masking")
        if isinstance(m, Mapping):
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    masking[k] = masking.get(k, 0) + v
    crash_gaps = [g for g in gaps if isinstance(g, Mapping) and g.get("kind", g.get("reason")) == "crash"]
    return {"drops": drops, "gaps": len(gaps), "crash_gaps": len(crash_gaps), "gap_list": gaps[:100],
            "masking": masking}


# --- masking ledger: evidence lost to masks not yet read -------------------------------------------

def pending_evidence(spans: Iterable[Mapping[str, Any]], duration_s: float | None,
                     screen_size: tuple[int, int] | None = None, frame_s: float = DEFAULT_FRAME_S
                     ) -> dict[str, Any]:
    """Seconds of screen evidence lost to masks of lines not yet read (``PENDING_RULES``).

    ``spans`` are :meth:`~station.review.session.ReviewSession.mask_spans` (session seconds; a
    record's ``end_s`` is its last frame's capture time, which stays on screen ``frame_s`` more).

    * ``pending_s``: the union over time of the pending records: seconds during which at least
      one not-yet-read area was masked on the screen;
    * ``pending_screen_s``: area-weighted, the integral of the masked share of the screen
      (``pending_area / screen_area`` summed over the records times their length): 2 s with half
      the screen unread count 1 screen-second. None without ``screen_size``;
    * ``pending_share``: ``pending_screen_s`` (``pending_s`` without a screen size) over the
      session's duration. Above ``PENDING_MAX_SHARE`` and ``PENDING_MIN_S`` it is flagged.
    """
    ivs: list[tuple[float, float]] = []
    weighted = 0.0
    area = screen_size[0] * screen_size[1] if screen_size and screen_size[0] > 0 and screen_size[1] > 0 else 0
    n = 0
    for m in spans:
        if m.get("rule") not in PENDING_RULES:
            continue
        a, b = float(m["start_s"]), float(m["end_s"]) + frame_s
        ivs.append((a, b))
        n += 1
        box = m.get("box")
        if area and isinstance(box, (list, tuple)) and len(box) == 4:
            w = max(0.0, min(float(box[2]), screen_size[0]) - max(float(box[0]), 0.0))  # type: ignore[index]
            h = max(0.0, min(float(box[3]), screen_size[1]) - max(float(box[1]), 0.0))  # type: ignore[index]
            weighted += (b - a) * w * h / area
    union = 0.0
    cur: tuple[float, float] | None = None
    for a, b in sorted(ivs):
        if cur is None or a > cur[1]:
            if cur is not None:
                union += cur[1] - cur[0]
            cur = (a, b)
        else:
            cur = (cur[0], max(cur[1], b))
    if cur is not None:
        union += cur[1] - cur[0]
    lost = weighted if area else union
    share = lost / duration_s if duration_s and duration_s > 0 else None
    return {"pending_records": n, "pending_s": round(union, 3),
            "pending_screen_s": round(weighted, 3) if area else None,
            "pending_share": round(share, 4) if share is not None else None}


# --- the report ----------------------------------------------------------------------------------

@dataclass
class QcReport:
    session_id: str
    metrics: dict[str, Any]
    flags: list[str]
    steps: dict[str, Any]
    consent: bool
    masking: dict[str, Any]
    spans: list[Span]
    computed_utc: str = field(default_factory=utc_now_iso)
    version: int = QC_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "session_id": self.session_id, "computed_utc": self.computed_utc,
                "metrics": self.metrics, "flags": self.flags, "steps": self.steps, "consent": self.consent,
                "masking": self.masking,
                "spans": [{"flag": s.flag, "start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3)}
                          for s in self.spans]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> QcReport:
        if doc.get("version") != QC_VERSION:
            raise ValueError(f"QC report version {doc.get('version')!r} is not supported")
        return cls(session_id=str(doc["session_id"]), metrics=dict(doc["metrics"]), flags=list(doc["flags"]),
                   steps=dict(doc["steps"]), consent=bool(doc["consent"]), masking=dict(doc["masking"]),
                   spans=[Span(s["flag"], float(s["start_s"]), float(s["end_s"])) for s in doc["spans"]],
                   computed_utc=str(doc["computed_utc"]), version=int(doc["version"]))


def evaluate(session_id: str, camera: CameraQc | None, audio: AudioQc | None,
             events: Sequence[Mapping[str, Any]], stats_list: Sequence[Mapping[str, Any]],
             thresholds: Thresholds, intact: bool | None = None,
             video_first_pts_s: float | None = None, recovered: bool = False,
             mask_spans: Sequence[Mapping[str, Any]] | None = None, duration_s: float | None = None,
             screen_size: tuple[int, int] | None = None, frame_s: float = DEFAULT_FRAME_S) -> QcReport:
    """Compare the measurements with the thresholds and produce the report with its flags.

    With ``mask_spans`` (the session's masking ledger) the metrics get :func:`pending_evidence`'s
    figures and the flag ``masking-pending`` when the evidence lost exceeds ``PENDING_MAX_SHARE``
    of ``duration_s`` and ``PENDING_MIN_S`` seconds."""
    flags: list[str] = []
    m: dict[str, Any] = {}
    spans: list[Span] = []
    if camera is None or not camera.samples:
        flags.append(NO_CAMERA)
        m["face_share"] = m["black_share"] = None
    else:
        m["face_share"] = round(camera.face_share or 0.0, 4)
        m["black_share"] = round(camera.black_share or 0.0, 4)
        m["camera_samples"] = camera.samples
        if m["black_share"] > thresholds.black_max_share:
            flags.append(CAMERA_COVERED)
        if m["face_share"] < thresholds.face_min_share:
            flags.append(NO_FACE)
        spans += camera.spans()
    if audio is None or not audio.windows:
        flags.append(NO_AUDIO)
        m["silent_share"] = m["clipped_share"] = None
    else:
        m["silent_share"] = round(audio.silent_share or 0.0, 4)
        m["clipped_share"] = round(audio.clipped_share or 0.0, 5)
        m["audio_seconds"] = round(audio.samples / max(1, audio.rate_hz), 2)
        if m["silent_share"] > thresholds.silence_max_share:
            flags.append(SILENCE)
        if m["clipped_share"] > thresholds.clip_max_share:
            flags.append(CLIPPING)
        spans += audio.spans()
    vfirst = video_first_pts_s if video_first_pts_s is not None else (camera.first_pts_s if camera else None)
    if audio is not None and audio.first_pts_s is not None and vfirst is not None:
        m["av_offset_ms"] = round((audio.first_pts_s - vfirst) * 1000, 1)
        if abs(m["av_offset_ms"]) > thresholds.av_offset_max_ms:
            flags.append(AV_OFFSET)
    else:
        m["av_offset_ms"] = None
    summary = manifest_summary(stats_list)
    m["drops"], m["gaps"] = summary["drops"], summary["gaps"]
    if summary["drops"]:
        flags.append(DROPS)
    if summary["gaps"]:
        flags.append(GAPS)
    steps = check_steps([s for s in (step_name(e) for e in events) if s], thresholds.required_steps)
    if steps["missing"]:
        flags.append(MISSING_STEP)
    if not steps["in_order"]:
        flags.append(STEPS_OUT_OF_ORDER)
    consent = any(is_consent(e) for e in events)
    if thresholds.consent_required and not consent:
        flags.append(NO_CONSENT)
    if intact is False:
        flags.append(CRASH_RECOVERED if recovered else NOT_INTACT)
    m["intact"] = intact
    if mask_spans is not None:
        pe = pending_evidence(mask_spans, duration_s, screen_size, frame_s)
        m.update(pe)
        lost = pe["pending_screen_s"] if pe["pending_screen_s"] is not None else pe["pending_s"]
        if pe["pending_share"] is not None and pe["pending_share"] > PENDING_MAX_SHARE and lost > PENDING_MIN_S:
            flags.append(MASKING_PENDING)
        spans += [Span(MASKING_PENDING, float(s["start_s"]), float(s["end_s"]) + frame_s)
                  for s in mask_spans if s.get("rule") in PENDING_RULES] if MASKING_PENDING in flags else []
    return QcReport(session_id=session_id, metrics=m, flags=flags, steps=steps, consent=consent,
                    masking=summary["masking"], spans=spans)


# --- a stored session: analyse once, seal beside it, load ---------------------------------------

def analyse_session(rs: Any, thresholds: Thresholds, chunk_s: float = 10.0) -> QcReport:
    """Decode a verified :class:`~station.review.session.ReviewSession` once and evaluate it."""
    from station.review.player import CAMERA

    if rs.report is None:
        rs.verify()
    camera, audio = CameraQc(), AudioQc()
    events = rs.events()
    stats = [m.get("stats") or {} for _, m in sorted(rs.manifests().items())]
    masks = rs.mask_spans()
    scr = rs.screen_info()
    fps = scr.get("fps")
    frame_s = 1 / fps if fps else DEFAULT_FRAME_S
    size = (int(scr["width"]), int(scr["height"])) if "width" in scr and "height" in scr else None
    try:
        player = rs.player(audit=False)
    except Exception:  # nothing playable: report what the manifests and oplog say
        dur = sum(max(0.0, r.duration_s) for r in rs.segment_refs())
        return evaluate(rs.session_id, None, None, events, stats, thresholds, intact=rs.intact,
                        recovered=rs.verdict() == "recovered", mask_spans=masks, duration_s=dur,
                        screen_size=size, frame_s=frame_s)
    try:
        t = 0.0
        while t < player.duration_s:  # grows to the true end once the last segment is loaded
            fr = player.frame_at(CAMERA, t)
            if fr is not None and camera.wants(fr.pts_s):
                camera.add(fr.gray(), fr.pts_s)
            t += 1 / CAMERA_SAMPLE_HZ
        t0 = 0.0
        while t0 < player.duration_s:
            block = player.audio(t0, min(player.duration_s, t0 + chunk_s))
            if block.size:
                audio.add(block, player.audio_rate_hz, t0)
            t0 += chunk_s
        firsts = player.first_pts()
        videos = [t for k, t in firsts.items() if k != "audio"]
        v_first = min(videos) if videos else None
        audio.first_pts_s = firsts.get("audio", audio.first_pts_s)
        duration = player.duration_s
    finally:
        player.close()
    return evaluate(rs.session_id, camera, audio, events, stats, thresholds, intact=rs.intact,
                    video_first_pts_s=v_first, recovered=rs.verdict() == "recovered",
                    mask_spans=masks, duration_s=duration, screen_size=size, frame_s=frame_s)


def store_qc(rs: Any, report: QcReport, recipients: Sequence[Any], tmp_dir: Any) -> str:
    """Seal the report for ``recipients`` and put it beside the session. Returns the key.

    The sealed file passes through ``tmp_dir`` (ciphertext only) because the sealed writer
    writes files."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from station.crypto.sealed import SealedWriter

    if not recipients:
        raise ValueError("no recipients to seal the QC report for")
    Path(tmp_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=".qc-", dir=tmp_dir)
    os.close(fd)
    os.unlink(name)
    try:
        with SealedWriter(name, recipients, {"session": rs.session_id, "kind": "qc"}) as w:
            w.write(json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8"))
        data = Path(name).read_bytes()
    finally:
        if os.path.exists(name):
            os.unlink(name)
    key = f"{rs.folder}/{QC_FILE}"
    rs.store.put(key, data)
    return key


def load_qc(store: Any, folder: str, identities: Sequence[Any]) -> QcReport | None:
    """The stored QC report of the session in ``folder``; None if there is none."""
    import io
    import json

    from station.crypto.sealed import SealedReader

    key = f"{folder.rstrip('/')}/{QC_FILE}"
    try:
        if hasattr(store, "exists") and not store.exists(key):
            return None
        data = store.get(key)
    except (KeyError, FileNotFoundError):
        return None
    with SealedReader(io.BytesIO(data), identities, name=QC_FILE) as r:
        return QcReport.from_json(json.loads(r.read()))
