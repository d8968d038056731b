"""Site policy: one declarative schema, loaded from TOML, validated at load.

Every key has a type, a default, an allowed range or set of values, a scope and a meaning:

* ``site`` keys may only be set by the site policy that IT deploys (``--policy FILE``,
  ``STATION_POLICY`` or ``/etc/dualrec/policy.toml``). A station cannot weaken them.
* ``station`` keys may also be set in the station's own ``station.toml`` in the data dir
  (device choices, UI language), which overrides the site value.

A wrong value fails at load with :class:`~station.errors.PolicyError` naming the key and what is
allowed. Read values as typed attributes: ``policy.capture.screen_fps``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.errors import PolicyError

SITE = "site"
STATION = "station"
SYSTEM_POLICY = Path("/etc/dualrec/policy.toml")


@dataclass(frozen=True)
class Key:
    """One policy key. ``type`` is one of bool, int, float, str, list (of str)."""

    name: str  # "section.key"
    type: type
    default: Any
    doc: str
    scope: str = SITE
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # regex a str (or each list item) must match

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.name.split(".", 1)[1]

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        if self.type in (int, float) and (self.min is not None or self.max is not None):
            return f"a{'n integer' if self.type is int else ' number'} from {self.min:g} to {self.max:g}"
        if self.type is list:
            return "a list of strings" + (f" matching {self.pattern}" if self.pattern else "")
        if self.pattern:
            return f"a string matching {self.pattern}"
        return {int: "an integer", float: "a number", str: "a string"}[self.type]

    def check(self, value: Any, origin: str) -> Any:
        where = f"{origin}: {self.name} = {value!r}"
        ok_type = isinstance(value, self.type) and not (self.type is int and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok_type = float(value), True
        if not ok_type:
            raise PolicyError(f"{where}: wrong type, expected {self.allowed()}")
        if self.type is float and not math.isfinite(value):  # nan fails every comparison below
            raise PolicyError(f"{where}: not a finite number, expected {self.allowed()}")
        if self.type is list:
            if not all(isinstance(v, str) for v in value):
                raise PolicyError(f"{where}: expected {self.allowed()}")
            items = value
        else:
            items = [value] if isinstance(value, str) else []
        if self.choices is not None and value not in self.choices:
            raise PolicyError(f"{where}: not allowed, expected {self.allowed()}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise PolicyError(f"{where}: out of range, expected {self.allowed()}")
        if self.pattern:
            for item in items:
                if not re.fullmatch(self.pattern, item):
                    raise PolicyError(f"{where}: {item!r} does not match {self.pattern}")
        return list(value) if self.type is list else value


RECIPIENT_RE = r"x25519:[A-Za-z0-9+/]{43}="
DEFAULT_LABELS = ["姓名", "客户", "客户姓名", "联系人", "地址", "联系地址", "住址", "证件号", "身份证",
                  "身份证号", "卡号", "银行卡", "手机", "电话", "邮箱", "Name", "Customer", "Address"]
DEFAULT_SCRIPT = ["identity_shown", "risk_disclosure_read", "terms_explained", "customer_confirmed"]
DEFAULT_CONSENT = ("您好，为保障您的权益，本次通话将进行全程录音录像（双录），"
                   "仅用于业务合规与质量检查。请问您是否同意？\n"
                   "Hello, to protect your rights this call is recorded (audio, video and screen) "
                   "for compliance and quality review only. Do you agree?")

SCHEMA: tuple[Key, ...] = (
    # --- station identity -------------------------------------------------------------------
    Key("station.id", str, "", "Station id used in object names; empty: derived from the host name.",
        pattern=r"|[A-Za-z0-9][A-Za-z0-9._-]{0,63}", scope=STATION),
    Key("station.site", str, "default", "Site name, written into every session manifest.",
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
    Key("station.agent_source", str, "os", "Where the agent identity comes from: the OS user, or the "
        "CTI login passed over the local API (falls back to the OS user).", choices=("os", "cti")),
    # --- capture ----------------------------------------------------------------------------
    Key("capture.profile", str, "standard", "Capture profile; 'standard' is screen 1920x1080@15, "
        "camera 1280x720@25, 48 kHz mono. 'custom' uses the values below as given.",
        choices=("standard", "low", "custom")),
    Key("capture.monitor", str, "1", "Screen to record: a monitor number (1 = first), 'all', or a "
        "region 'x,y,w,h'.", scope=STATION, pattern=r"all|[0-9]{1,2}|[0-9]+,[0-9]+,[0-9]+,[0-9]+"),
    Key("capture.screen_fps", int, 15, "Screen frames per second.", min=1, max=60),
    Key("capture.screen_width", int, 1920, "Encoded screen width (frames are scaled to fit).",
        min=320, max=7680),
    Key("capture.screen_height", int, 1080, "Encoded screen height.", min=240, max=4320),
    Key("capture.draw_cursor", bool, True, "Draw the mouse cursor into screen frames."),
    Key("capture.camera", str, "0", "Camera: a device index or any URL/file OpenCV can open; "
        "empty disables the camera.", scope=STATION),
    Key("capture.camera_width", int, 1280, "Requested camera width.", min=160, max=3840),
    Key("capture.camera_height", int, 720, "Requested camera height.", min=120, max=2160),
    Key("capture.camera_fps", int, 25, "Requested camera frames per second.", min=1, max=60),
    Key("capture.microphone", str, "", "Microphone: a sounddevice name or index; empty: the "
        "system default input.", scope=STATION),
    Key("capture.audio_rate_hz", int, 48000, "Audio sample rate.", choices=None, min=8000, max=96000),
    Key("capture.audio_channels", int, 1, "Audio channels.", min=1, max=2),
    Key("capture.audio_codec", str, "aac", "Audio codec.", choices=("aac", "opus")),
    Key("capture.video_preset", str, "veryfast", "x264 preset.",
        choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")),
    Key("capture.screen_crf", int, 28, "x264 CRF for the screen (lower = better).", min=10, max=45),
    Key("capture.camera_crf", int, 26, "x264 CRF for the camera.", min=10, max=45),
    Key("capture.keyframe_interval_s", float, 2.0, "Seconds between keyframes.", min=0.5, max=60),
    Key("capture.segment_seconds", int, 60, "Seconds per sealed segment (rotated on a keyframe).",
        min=2, max=3600),
    Key("capture.fragment_seconds", float, 1.0, "Seconds per container fragment; each fragment is "
        "flushed into the sealed file, so at most this much is lost in a crash.", min=0.2, max=10),
    Key("capture.watermark", bool, True, "Burn UTC time, station and agent into screen and camera."),
    Key("capture.queue_seconds", float, 2.0, "Capacity of each source queue in seconds (the "
        "microphone's holds at least 10 s); a full queue drops (and counts) rather than blocking a "
        "device.", min=0.2, max=30),
    # --- masking ----------------------------------------------------------------------------
    Key("masking.enabled", bool, True, "Mask customer data on screen frames before encoding."),
    Key("masking.engine", str, "onnx", "OCR engine: PP-OCR in ONNX (shipped in the package) or "
        "Tesseract (Debian).", choices=("onnx", "tesseract")),
    Key("masking.delay_ms", int, 250, "Delay line before encoding, giving OCR time to clear new "
        "text; uncleared text is masked regardless.", min=0, max=2000),
    Key("masking.labels", list, DEFAULT_LABELS, "Labels after which names and addresses are masked."),
    Key("masking.window_rules", list, [], "Windows masked whole: regular expressions matched "
        "against 'application: title'."),
    Key("masking.style", str, "block", "How masked pixels look.", choices=("block", "blur")),
    # --- crypto -----------------------------------------------------------------------------
    Key("crypto.recipients", list, [], "Recipient public keys ('x25519:BASE64'); every segment key "
        "is wrapped for each. Required for recording.", pattern=RECIPIENT_RE),
    Key("crypto.trusted_stations", list, [], "Reviewer side: station signing keys "
        "('ed25519:BASE64') trusted in addition to those approved by a site authority.",
        pattern=r"ed25519:[A-Za-z0-9+/]{43}="),
    Key("crypto.site_authorities", list, [], "Reviewer side: public keys ('ed25519:BASE64') of "
        "the site enrolment authorities; a station key in storage is trusted only with an "
        "approval signed by one of them (`station site approve`).",
        pattern=r"ed25519:[A-Za-z0-9+/]{43}="),
    Key("crypto.revoked_stations", list, [], "Reviewer side: station signing keys "
        "('ed25519:BASE64') never trusted, whatever storage or the other keys say (revocations "
        "pinned out of band).", pattern=r"ed25519:[A-Za-z0-9+/]{43}="),
    # --- storage ----------------------------------------------------------------------------
    Key("storage.kind", str, "local", "Central storage: a local folder (embedded default) or "
        "S3-compatible object storage.", choices=("local", "s3")),
    Key("storage.local_dir", str, "", "Folder of the local store; empty: <data dir>/store. A folder "
        "named here must exist (a mounted share; `station policy init` creates it): a missing one "
        "is never created, uploads wait and the spool is kept."),
    Key("storage.s3_endpoint", str, "", "S3 endpoint URL, e.g. https://s3.example:8333; empty: AWS.",
        pattern=r"|https?://[^\s]+"),
    Key("storage.s3_region", str, "us-east-1", "S3 region (SigV4 signs with it)."),
    Key("storage.s3_bucket", str, "", "S3 bucket.", pattern=r"|[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"),
    Key("storage.s3_prefix", str, "dualrec", "Key prefix inside the bucket.",
        pattern=r"[A-Za-z0-9._/-]{0,200}"),
    Key("storage.s3_path_style", bool, True, "Path-style addressing (needed by most on-premises "
        "servers)."),
    Key("storage.s3_flexible_checksums", bool, True, "Send x-amz-checksum headers; turn off for old "
        "appliances that reject them (Content-MD5 and our own SHA-256 are always used)."),
    Key("storage.object_lock", str, "warn", "When the bucket has no Object Lock with a COMPLIANCE "
        "default retention: warn, refuse to upload, or ignore.", choices=("warn", "refuse", "ignore")),
    Key("storage.retention_days", int, 0, "Per-object COMPLIANCE retention to set on upload; 0 "
        "relies on the bucket default.", min=0, max=36500),
    Key("storage.legal_hold", bool, False, "Set a legal hold on every uploaded object."),
    # --- upload -----------------------------------------------------------------------------
    Key("upload.enabled", bool, True, "Upload sealed segments in the background."),
    Key("upload.concurrency", int, 2, "Parallel part uploads.", min=1, max=16),
    Key("upload.part_size_mb", int, 8, "Multipart part size in MiB.", min=5, max=512),
    Key("upload.multipart_threshold_mb", int, 16, "Objects above this size use multipart upload.",
        min=5, max=5120),
    Key("upload.bandwidth_kbps", int, 0, "Upload bandwidth cap in kbit/s; 0 is unlimited.",
        min=0, max=10_000_000),
    Key("upload.during_call", str, "throttle", "While recording: keep uploading, pause, or "
        "throttle to upload.call_kbps.", choices=("run", "pause", "throttle")),
    Key("upload.call_kbps", int, 2000, "Bandwidth cap while a call is recorded (throttle mode).",
        min=8, max=10_000_000),
    Key("upload.retry_initial_s", float, 2.0, "First retry delay.", min=0.05, max=600),
    Key("upload.retry_max_s", float, 900.0, "Longest retry delay.", min=1, max=86400),
    # --- spool (local disk) -----------------------------------------------------------------
    Key("spool.quota_mb", int, 20480, "Largest size of not-yet-purged sealed data on the seat; "
        "recording stops with 'disk-full' beyond it.", min=16, max=10_000_000),
    Key("spool.min_free_mb", int, 1024, "Recording stops cleanly when free disk space falls below "
        "this.", min=0, max=10_000_000),
    # --- session flow -----------------------------------------------------------------------
    Key("session.consent_required", bool, True, "Ask the agent to confirm the customer's consent."),
    Key("session.consent_text", str, DEFAULT_CONSENT, "Consent notice the agent reads out."),
    Key("session.script_steps", list, DEFAULT_SCRIPT, "Script steps the agent ticks, in order.",
        pattern=r"[a-z0-9_]{1,64}"),
    Key("session.required_steps", list, DEFAULT_SCRIPT, "Script steps QC requires, in order.",
        pattern=r"[a-z0-9_]{1,64}"),
    Key("session.pause_audio", str, "mute", "Audio while paused for privacy: muted (silence kept "
        "on the timeline) or kept.", choices=("mute", "keep")),
    Key("session.max_minutes", int, 240, "Longest session; it is stopped normally after this.",
        min=1, max=1440),
    # --- local API --------------------------------------------------------------------------
    Key("api.enabled", bool, True, "Serve the local API on 127.0.0.1."),
    Key("api.port", int, 8765, "Port of the local API on 127.0.0.1.", min=1024, max=65535),
    # --- QC ---------------------------------------------------------------------------------
    Key("qc.face_min_share", float, 0.6, "Least share of time with a face on camera.", min=0, max=1),
    Key("qc.black_max_share", float, 0.1, "Largest share of time the camera may be black/covered.",
        min=0, max=1),
    Key("qc.silence_max_share", float, 0.6, "Largest share of silent audio.", min=0, max=1),
    Key("qc.clip_max_share", float, 0.01, "Largest share of clipped audio.", min=0, max=1),
    Key("qc.av_offset_max_ms", int, 200, "Largest audio/video start offset.", min=0, max=10000),
    # --- review -----------------------------------------------------------------------------
    Key("review.require_reason", bool, True, "Reviewers must give a reason to open a session "
        "(export always requires one)."),
    # --- UI ---------------------------------------------------------------------------------
    Key("ui.language", str, "auto", "UI language: follow the system locale, or fixed.",
        choices=("auto", "zh_CN", "en"), scope=STATION),
    Key("ui.warn_no_face_s", int, 20, "Warn the agent after this many seconds without a face.",
        min=1, max=3600),
    Key("ui.warn_silence_s", int, 30, "Warn the agent after this many seconds of silence.",
        min=1, max=3600),
)

KEYS: dict[str, Key] = {k.name: k for k in SCHEMA}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.section for k in SCHEMA))

PROFILES: dict[str, dict[str, Any]] = {
    "standard": {"capture.screen_width": 1920, "capture.screen_height": 1080, "capture.screen_fps": 15,
                 "capture.camera_width": 1280, "capture.camera_height": 720, "capture.camera_fps": 25,
                 "capture.audio_rate_hz": 48000, "capture.audio_channels": 1},
    "low": {"capture.screen_width": 1280, "capture.screen_height": 720, "capture.screen_fps": 10,
            "capture.camera_width": 640, "capture.camera_height": 360, "capture.camera_fps": 15,
            "capture.audio_rate_hz": 48000, "capture.audio_channels": 1},
}


class Section:
    """Typed, read-only view of one policy section: ``policy.capture.screen_fps``."""

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, item: str) -> Any:
        try:
            return self._values[item]
        except KeyError:
            raise AttributeError(f"policy has no key {self._name}.{item}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("policy is read-only")

    def __repr__(self) -> str:
        return f"Section({self._name!r}, {self._values!r})"


class Policy:
    """The effective policy: defaults, then the site file, then station-scope overrides."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.sources = dict(sources)  # key -> where its value came from
        for section in SECTIONS:
            setattr(self, section, Section(section, {KEYS[k].field: v for k, v in self._values.items()
                                                     if KEYS[k].section == section}))

    # sections are set dynamically; declare the common ones for type checkers
    station: Section
    capture: Section
    masking: Section
    crypto: Section
    storage: Section
    upload: Section
    spool: Section
    session: Section
    api: Section
    qc: Section
    review: Section
    ui: Section

    def get(self, name: str) -> Any:
        return self._values[name]

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._values.items())

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **dotted: Any) -> Policy:
        """A copy with some keys changed (validated); keys use ``__`` for the dot."""
        values = dict(self._values)
        sources = dict(self.sources)
        for name, value in dotted.items():
            name = name.replace("__", ".")
            if name not in KEYS:
                raise PolicyError(f"unknown key {name!r}")
            values[name] = KEYS[name].check(value, "override")
            sources[name] = "override"
        return Policy(values, sources)

    @classmethod
    def defaults(cls) -> Policy:
        return cls({k.name: k.default for k in SCHEMA}, {k.name: "default" for k in SCHEMA})


def _flatten(doc: Mapping[str, Any], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if section not in SECTIONS:
            raise PolicyError(f"{origin}: unknown section [{section}]; known sections: {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise PolicyError(f"{origin}: {section} must be a table [{section}]")
        for key, value in body.items():
            name = f"{section}.{key}"
            if name not in KEYS:
                known = ", ".join(k.field for k in SCHEMA if k.section == section)
                raise PolicyError(f"{origin}: unknown key {name!r}; keys of [{section}]: {known}")
            flat[name] = value
    return flat


def read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{path}: policy file not found") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: policy file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None


def load(site: Path | None = None, station: Path | None = None) -> Policy:
    """Load the effective policy. ``site`` None: defaults only (plus ``station`` overrides)."""
    values = {k.name: k.default for k in SCHEMA}
    sources = {k.name: "default" for k in SCHEMA}
    if site is not None:
        for name, value in _flatten(read_toml(site), str(site)).items():
            values[name] = KEYS[name].check(value, str(site))
            sources[name] = str(site)
    if station is not None and station.exists():
        for name, value in _flatten(read_toml(station), str(station)).items():
            key = KEYS[name]
            if key.scope != STATION:
                raise PolicyError(f"{station}: {name} may only be set by the site policy, not by the station")
            values[name] = key.check(value, str(station))
            sources[name] = str(station)
    profile = values["capture.profile"]
    if profile in PROFILES:
        for name, value in PROFILES[profile].items():
            if sources[name] == "default":
                values[name] = value
    return Policy(values, sources)


def resolve_site_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """``--policy`` beats ``STATION_POLICY`` beats /etc/dualrec/policy.toml; None: built-in default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("STATION_POLICY")
    if env:
        return Path(env)
    if SYSTEM_POLICY.exists():
        return SYSTEM_POLICY
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    if "\n" in text:
        return '"""\n' + text.replace("\\", "\\\\").replace('"""', '\\"""') + '"""'
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(overrides: Mapping[str, Any] | None = None) -> str:
    """A commented starter policy: every key with its default (or override) and meaning."""
    overrides = dict(overrides or {})
    for name, value in overrides.items():
        if name not in KEYS:
            raise PolicyError(f"unknown key {name!r}")
        KEYS[name].check(value, "policy init")
    lines = ["# DualRec Station site policy.",
             "# Every key is shown with its default; delete what you do not change.",
             "# 'scope: station' keys may be overridden per seat in <data dir>/station.toml.", ""]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for key in (k for k in SCHEMA if k.section == section):
            lines.append(f"# {key.doc}")
            lines.append(f"# allowed: {key.allowed()}; scope: {key.scope}; default: {_toml_value(key.default)}"
                         .replace("\n", " "))
            value = overrides.get(key.name, key.default)
            prefix = "" if key.name in overrides else "# "
            rendered = _toml_value(value)
            if prefix and "\n" in rendered:
                rendered = _toml_value(str(value).replace("\n", "\\n"))
            lines.append(f"{prefix}{key.field} = {rendered}")
        lines.append("")
    text = "\n".join(lines)
    tomllib.loads(text)  # what we write must load
    return text


def reference_markdown() -> str:
    """The policy reference table for docs/deploy.md, generated from the schema."""
    rows = ["| key | type | default | allowed | scope | meaning |", "|---|---|---|---|---|---|"]
    for key in SCHEMA:
        default = _toml_value(key.default).replace("\n", " ").replace("|", "\\|")
        if len(default) > 60:
            default = default[:57] + '..."'
        rows.append(f"| `{key.name}` | {key.type.__name__} | `{default}` | {key.allowed().replace('|', chr(92) + '|')} "
                    f"| {key.scope} | {key.doc} |")
    return "\n".join(rows) + "\n"
