"""``station doctor``: is this seat able to record, seal and upload?

Each check returns a :class:`Check` with status ``ok``, ``warn`` or ``fail`` and a reason a
person can act on. Checks never raise: an unexpected exception becomes a ``fail`` naming it.
Nothing here prints secrets or customer data.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from station.context import Context

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def check_display(ctx: Context) -> Check:
    disp = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not disp and os.name != "nt":
        return Check("display", FAIL, "no DISPLAY: screen capture impossible (not in a desktop session?)")
    try:
        import mss

        with mss.MSS() as sct:
            monitors = [{"left": m["left"], "top": m["top"], "width": m["width"], "height": m["height"]}
                        for m in sct.monitors[1:]]
            shot = sct.grab(sct.monitors[1])
            grabbed = (shot.width, shot.height)
    except Exception as exc:
        return Check("display", FAIL, f"cannot capture display {disp}: {exc}")
    wanted = ctx.policy.capture.monitor
    if wanted not in ("all",) and "," not in wanted and int(wanted) > len(monitors):
        return Check("display", FAIL, f"policy capture.monitor={wanted} but only {len(monitors)} monitor(s)",
                     {"display": disp, "monitors": monitors})
    return Check("display", OK, f"{disp}: {len(monitors)} monitor(s), grab {grabbed[0]}x{grabbed[1]} works",
                 {"display": disp, "monitors": monitors})


def check_camera(ctx: Context) -> Check:
    source = ctx.policy.capture.camera
    if not source:
        return Check("camera", WARN, "camera disabled by policy (capture.camera is empty)")
    devices = sorted(glob.glob("/dev/video*"))
    if source.isdigit():
        if os.name != "nt" and not devices:
            return Check("camera", FAIL, f"no camera devices (/dev/video*); policy wants device {source}",
                         {"devices": devices})
        return Check("camera", OK, f"{len(devices)} camera device(s); policy uses index {source}",
                     {"devices": devices})
    import cv2

    cap = cv2.VideoCapture(source)
    try:
        ok = cap.isOpened() and cap.read()[0]
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()
    if not ok:
        return Check("camera", FAIL, f"camera source {source!r} cannot be opened or read")
    return Check("camera", OK, f"camera source opens, {size[0]}x{size[1]}", {"source": source, "devices": devices})


def check_audio(ctx: Context) -> Check:
    try:
        import sounddevice as sd

        inputs = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
    except Exception as exc:
        return Check("microphone", FAIL, f"audio system unavailable: {exc}")
    if not inputs:
        return Check("microphone", FAIL, "no audio input devices")
    wanted = ctx.policy.capture.microphone
    if wanted and not wanted.isdigit() and not any(wanted in n for n in inputs):
        return Check("microphone", FAIL, f"policy capture.microphone={wanted!r} not among inputs",
                     {"inputs": inputs})
    return Check("microphone", OK, f"{len(inputs)} input device(s)", {"inputs": inputs})


def check_keyring(ctx: Context) -> Check:
    try:
        name = ctx.secrets.check_backend()
        probe = "doctor-probe"
        ctx.secrets.set(probe, "1")
        back = ctx.secrets.get(probe)
        ctx.secrets.delete(probe)
    except Exception as exc:
        return Check("keyring", FAIL, str(exc))
    if back != "1":
        return Check("keyring", FAIL, f"{name}: a value written could not be read back")
    has_key = ctx.secrets.get("station-signing-key") is not None
    if not has_key:
        return Check("keyring", WARN, f"{name} works; no station signing key yet (run `station keys init`)",
                     {"backend": name})
    return Check("keyring", OK, f"{name} works; station signing key present", {"backend": name})


def check_data_dir(ctx: Context) -> Check:
    d = ctx.data_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".doctor-") as fh:
            fh.write(b"x")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return Check("data_dir", FAIL, f"{d} is not writable: {exc.strerror or exc}")
    free_mb = shutil.disk_usage(d).free // 2**20
    need = int(ctx.policy.spool.min_free_mb)
    details = {"path": str(d), "free_mb": free_mb, "min_free_mb": need}
    if free_mb < need:
        return Check("data_dir", FAIL, f"{d}: {free_mb} MiB free, policy needs {need} MiB", details)
    if free_mb < 2 * need:
        return Check("data_dir", WARN, f"{d}: only {free_mb} MiB free", details)
    return Check("data_dir", OK, f"{d} writable, {free_mb} MiB free", details)


def check_storage(ctx: Context) -> Check:
    pol = ctx.policy.storage
    try:
        from uploader.stores import open_store
    except ImportError:
        return Check("storage", WARN, "uploader not installed")
    try:
        store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
        status: dict[str, Any] = dict(store.object_lock_status() or {})
        store.list(store_probe_prefix(store))
    except Exception as exc:
        where = pol.s3_endpoint or "AWS" if pol.kind == "s3" else pol.local_dir or "<data>/store"
        return Check("storage", FAIL, f"{pol.kind} storage at {where} unreachable: {_short(exc)}")
    details = {"kind": pol.kind, **status}
    if pol.kind == "local":
        return Check("storage", WARN if pol.object_lock != "ignore" else OK,
                     "local folder store reachable (not immutable: no Object Lock)", details)
    locked = status.get("object_lock") and status.get("mode") == "COMPLIANCE"
    if not locked:
        level = FAIL if pol.object_lock == "refuse" else WARN if pol.object_lock == "warn" else OK
        return Check("storage", level, f"bucket {pol.s3_bucket} reachable; no Object Lock with COMPLIANCE "
                     "default retention", details)
    return Check("storage", OK, f"bucket {pol.s3_bucket} reachable; Object Lock COMPLIANCE "
                 f"{status.get('days') or status.get('years')} {'days' if status.get('days') else 'years'}",
                 details)


def store_probe_prefix(store: Any) -> str:
    return str(getattr(store, "prefix", "") or "")


def check_backlog(ctx: Context) -> Check:
    try:
        from uploader.service import backlog
    except ImportError:
        return Check("upload_backlog", WARN, "uploader not installed")
    try:
        b = backlog(ctx.data_dir)
    except Exception as exc:
        return Check("upload_backlog", FAIL, f"cannot read the upload journal: {_short(exc)}")
    age = b.get("oldest_age_s") or 0
    quarantined = b.get("quarantined") or []
    if quarantined:
        listed = "; ".join(f"{q['session_id']}: {q['reason']}" for q in quarantined[:3])
        more = f"; and {len(quarantined) - 3} more" if len(quarantined) > 3 else ""
        return Check("upload_backlog", WARN, f"{len(quarantined)} session(s) quarantined, not uploaded until "
                     f"their files match their manifest again (files kept): {listed}{more}; "
                     f"{b['count']} pending", b)
    if b.get("last_error"):
        return Check("upload_backlog", WARN, f"{b['count']} pending; last error: {b['last_error']}", b)
    if age > 24 * 3600:
        return Check("upload_backlog", WARN, f"{b['count']} pending, oldest {age / 3600:.0f} h", b)
    return Check("upload_backlog", OK, f"{b.get('count', 0)} pending", b)


def check_clock(ctx: Context) -> Check:
    now = dt.datetime.now(dt.UTC)
    a = time.monotonic_ns()
    time.sleep(0.01)
    b = time.monotonic_ns()
    details: dict[str, Any] = {"utc": now.isoformat(timespec="seconds")}
    if b <= a:
        return Check("clock", FAIL, "monotonic clock does not advance", details)
    if now.year < 2024:
        return Check("clock", FAIL, f"system clock says {now:%Y-%m-%d}: set the time (NTP)", details)
    skew = _storage_skew_s(ctx)
    if skew is not None:
        details["storage_skew_s"] = round(skew, 1)
        if abs(skew) > 300:
            return Check("clock", FAIL, f"clock differs from the storage server by {skew:.0f} s "
                         "(S3 signatures fail beyond 15 min; fix NTP)", details)
        if abs(skew) > 5:
            return Check("clock", WARN, f"clock differs from the storage server by {skew:.1f} s", details)
    return Check("clock", OK, f"UTC {details['utc']}" + (f", {skew:+.1f} s from storage" if skew is not None
                                                          else ""), details)


def _storage_skew_s(ctx: Context) -> float | None:
    pol = ctx.policy.storage
    if pol.kind != "s3" or not pol.s3_endpoint:
        return None
    import email.utils
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(pol.s3_endpoint, timeout=3)  # noqa: S310 - endpoint from site policy
        return None
    except urllib.error.HTTPError as exc:
        date = exc.headers.get("Date")
    except OSError:
        return None
    if not date:
        return None
    server = email.utils.parsedate_to_datetime(date)
    return (dt.datetime.now(dt.UTC) - server).total_seconds()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def check_enrolment(ctx: Context) -> Check:  # station/enrolment.py (installer and enrolment)
    from station.enrolment import doctor_check

    return doctor_check(ctx)  # type: ignore[no-any-return]


CHECKS: tuple[Callable[[Context], Check], ...] = (
    check_display, check_camera, check_audio, check_keyring, check_data_dir, check_storage,
    check_enrolment, check_backlog, check_clock)


def run_checks(ctx: Context) -> list[Check]:
    out = []
    for fn in CHECKS:
        try:
            out.append(fn(ctx))
        except Exception as exc:
            out.append(Check(fn.__name__.removeprefix("check_"), FAIL, f"check crashed: {_short(exc)}"))
    return out


def as_json(checks: list[Check]) -> dict[str, Any]:
    worst = FAIL if any(c.status == FAIL for c in checks) else WARN if any(c.status == WARN for c in checks) else OK
    return {"status": worst, "checks": [asdict(c) for c in checks]}
