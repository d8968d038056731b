"""Review benchmarks: open-to-first-frame and seek latency on a 30-minute session, and the catalog
load time for 10,000 session manifests. Prints figures; asserts nothing about time.

    ./dev bench review [--minutes 30] [--sessions 10000]

The 30-minute session is made of one encoded minute (screen 1920x1080@15, camera 1280x720@25,
AAC 48 kHz, x264 ultrafast, keyframe every 2 s) re-muxed 30 times with shifted timestamps and
sealed with the real SessionSealer, so every segment is a real sealed Matroska file. References
in the same run: decoding the first frame of the same segment from plaintext in memory (no
decryption, no verification), and plain os.walk + json.loads over the 10,000 manifests.
"""

from __future__ import annotations

import argparse
import fractions
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import nacl.public
import nacl.signing
import numpy as np

from station.crypto import SessionSealer
from station.crypto.keys import station_text
from station.review.audit import ReviewAudit
from station.review.catalog import Catalog
from station.review.player import CAMERA, SCREEN
from station.review.session import ReviewSession
from tests import reviewkit as kit
from uploader.layout import session_prefix
from uploader.stores import LocalFolderStore


def encode_minute(seconds: float) -> bytes:
    buf = io.BytesIO()
    kit.encode_segment(buf, start_s=0.0, dur_s=seconds, screen_fps=15, camera_fps=25,
                       screen_size=(1920, 1080), camera_size=(1280, 720), gop_s=2.0)
    return buf.getvalue()


def shifted(minute: bytes, offset_s: float) -> bytes:
    """The same packets with timestamps moved by offset_s (stream copy, no re-encode)."""
    out_buf = io.BytesIO()
    with av.open(io.BytesIO(minute)) as inp:
        out = av.open(out_buf, "w", format="matroska")
        streams = {}
        for s in inp.streams:
            o = out.add_stream_from_template(s)
            o.metadata["title"] = s.metadata.get("title", "")
            streams[s.index] = o
        for pkt in inp.demux():
            if pkt.size == 0 or pkt.pts is None:
                continue
            shift = int(round(offset_s / pkt.time_base))
            pkt.pts += shift
            if pkt.dts is not None:
                pkt.dts += shift
            pkt.stream = streams[pkt.stream.index]
            out.mux(pkt)
        out.close()
    return out_buf.getvalue()


def make_long_session(root: Path, minutes: int, seg_s: float, ident: nacl.public.PrivateKey,
                      sk: nacl.signing.SigningKey) -> tuple[Path, bytes]:
    t = time.perf_counter()
    minute = encode_minute(seg_s)
    print(f"  encoded one {seg_s:g} s segment in {time.perf_counter() - t:.1f} s ({len(minute) / 1e6:.1f} MB)")
    sid = kit.new_session_id()
    d = root / sid
    sealer = SessionSealer(d, sid, "seat-01", [bytes(ident.public_key)], sk, meta={"agent": "bench"})
    n = int(minutes * 60 / seg_s)
    t = time.perf_counter()
    for i in range(n):
        data = minute if i == 0 else shifted(minute, i * seg_s)
        w = sealer.open_segment(i + 1, "media")
        for off in range(0, len(data), 256 * 1024):
            w.write(data[off: off + 256 * 1024])
            w.flush()
        for kind in ("oplog", "masklog"):
            ow = sealer.open_segment(i + 1, kind)
            ow.write((json.dumps({"t_ms": int((i * seg_s + 5) * 1000), "kind": "marker",
                                  "marker": "script_step", "label": f"step{i}"}) + "\n").encode()
                     if kind == "oplog" else b"")
        sealer.close_segment(i + 1, {"start_pts_ms": int(i * seg_s * 1000)})
    sealer.finish("normal", {"duration_s": n * seg_s})
    print(f"  sealed {n} segments in {time.perf_counter() - t:.1f} s")
    return d, minute


def bench_player(minutes: int, seg_s: float, seeks: int) -> None:
    print(f"== {minutes}-minute session ({seg_s:g} s segments) ==")
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    d, minute = make_long_session(tmp / "spool", minutes, seg_s, ident, sk)
    size_mb = sum(p.stat().st_size for p in d.iterdir()) / 1e6
    print(f"  session: {size_mb:.0f} MB sealed")
    stores: list[tuple[str, object]] = [("local folder store", LocalFolderStore(tmp / "store"))]
    if os.environ.get("STATION_TEST_S3_ENDPOINT"):
        from tests.services import shared_s3
        from uploader.stores import S3Settings, S3Store

        s3 = shared_s3()
        bucket = "bench-review-" + os.urandom(4).hex()
        s3.client().create_bucket(Bucket=bucket)
        stores.append(("SeaweedFS (S3, loopback)", S3Store(S3Settings(bucket=bucket, endpoint=s3.endpoint,
                                                                        region=s3.region),
                                                             s3.access_key, s3.secret_key)))
    for label, store in stores:
        folder = session_prefix("", d.name, "seat-01")
        for p in sorted(d.iterdir()):
            store.put(f"{folder}/{p.name}", p)  # type: ignore[attr-defined]
        print(f"  -- {label}")
        if label.startswith("SeaweedFS"):
            client = store.client  # type: ignore[attr-defined]
            t = time.perf_counter()
            total = 0
            for p in sorted(d.iterdir()):
                total += len(client.get_object(Bucket=store.bucket, Key=f"{folder}/{p.name}")["Body"].read())  # type: ignore[attr-defined]
            print(f"  reference: plain boto3 download of every object of the session ({total / 1e6:.0f} MB): "
                  f"{(time.perf_counter() - t) * 1000:.0f} ms")
        _bench_open_seek(store, folder, minute, ident, sk, seeks)


def _bench_open_seek(store: object, folder: str, minute: bytes, ident: nacl.public.PrivateKey,
                     sk: nacl.signing.SigningKey, seeks: int) -> None:

    # reference: first frame of the same segment from plaintext in memory
    t = time.perf_counter()
    with av.open(io.BytesIO(minute)) as c:
        vs = [s for s in c.streams if s.type == "video"]
        for _ in c.decode(vs[0]):
            break
    ref_first = time.perf_counter() - t

    audit = ReviewAudit(store, "", None, "bench")
    rs = ReviewSession(store, folder, [ident], [station_text(sk.verify_key)], audit)
    t0 = time.perf_counter()
    report = rs.open(reason="bench")
    t_verify = time.perf_counter() - t0
    assert report["intact"], report["problems"][:3]
    player = rs.player()
    fr_s = player.frame_at(SCREEN, 0.0)
    fr_c = player.frame_at(CAMERA, 0.0)
    assert fr_s is not None and fr_c is not None
    fr_s.rgb()
    t_first = time.perf_counter() - t0
    print(f"  open -> first frame (audit + verify {len(report['segments'])} segments + decrypt + demux + "
          f"decode screen and camera): {t_first * 1000:.0f} ms  (of which verify {t_verify * 1000:.0f} ms; "
          f"goal <= 2000 ms)")
    print(f"  reference: first frame of the same segment from plaintext in memory: {ref_first * 1000:.0f} ms")

    rng = random.Random(1)
    dur = player.duration_s
    lat = []
    for _ in range(seeks):
        target = rng.uniform(0, dur - 1)
        t = time.perf_counter()
        a = player.frame_at(SCREEN, target)
        b = player.frame_at(CAMERA, target)
        assert a is not None and b is not None and abs(a.pts_s - target) < 0.2
        a.rgb()
        b.rgb()
        lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"  seek to a random time ({seeks} seeks, most into a segment not in memory): "
          f"median {statistics.median(lat) * 1000:.0f} ms, p90 {lat[int(len(lat) * 0.9)] * 1000:.0f} ms, "
          f"max {lat[-1] * 1000:.0f} ms (goal <= 300 ms)")
    near = []
    base = 600.0
    player.frame_at(SCREEN, base)
    for k in range(1, 11):
        t = time.perf_counter()
        player.frame_at(SCREEN, base - k * 1.3)
        player.frame_at(CAMERA, base - k * 1.3)
        near.append(time.perf_counter() - t)
    print(f"  seek within the loaded segment: median {statistics.median(near) * 1000:.0f} ms")
    player.close()


def bench_catalog(n: int) -> None:
    print(f"== catalog of {n} sessions (local folder store) ==")
    tmp = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    store = LocalFolderStore(tmp / "store")
    t = time.perf_counter()
    import datetime as dt

    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(n):
        start = base + dt.timedelta(minutes=13 * i)
        sid = f"{start:%Y%m%dT%H%M%SZ}-{i:08x}"
        doc = {"type": "session", "session": sid, "station": f"seat-{i % 40:02d}", "agent": f"agent-{i % 300}",
               "started_utc": start.isoformat().replace("+00:00", "Z"), "segments": 3,
               "ended_utc": (start + dt.timedelta(seconds=180 + i % 600)).isoformat().replace("+00:00", "Z"),
               "end_reason": "normal", "site": "hq", "sig": "x" * 88}
        store.put(f"{session_prefix('', sid, doc['station'])}/session.json", json.dumps(doc).encode())
    print(f"  wrote {n} session.json objects in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    found = 0
    for dirpath, _dirs, files in os.walk(store.root):
        for f in files:
            if f == "session.json":
                json.loads(Path(dirpath, f).read_bytes())
                found += 1
    ref = time.perf_counter() - t
    cat = Catalog(store, tmp / "cat.sqlite")
    t = time.perf_counter()
    counts = cat.refresh()
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = cat.refresh(today=dt.date(2026, 4, 1))
    incr = time.perf_counter() - t
    t = time.perf_counter()
    rows = cat.query()
    q_all = time.perf_counter() - t
    from station.review.catalog import Filter

    t = time.perf_counter()
    some = cat.query(Filter(station="seat-07", date_from="2026-01-02", min_duration_s=300), sort="agent")
    q_f = time.perf_counter() - t
    assert counts["total"] == n == len(rows) == found and again["added"] == 0
    print(f"  first load (list + fetch + parse {n} manifests into SQLite): {first:.2f} s; "
          f"reference os.walk + json.loads: {ref:.2f} s")
    print(f"  incremental refresh (nothing new): {incr:.2f} s")
    print(f"  query all {n} rows: {q_all * 1000:.0f} ms; filtered + sorted ({len(some)} rows): {q_f * 1000:.0f} ms")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from ui.qt import application
    from ui.review_window import CatalogModel

    application()
    model = CatalogModel(cat)
    t = time.perf_counter()
    model.reload()
    for r in range(0, model.rowCount(), 97):
        for c in range(model.columnCount()):
            model.data(model.index(r, c), 0)
    print(f"  Qt table model reset with {model.rowCount()} rows: {(time.perf_counter() - t) * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--segment-s", type=float, default=60.0)
    ap.add_argument("--seeks", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=10_000)
    args = ap.parse_args()
    np.random.seed(0)
    _ = fractions
    bench_catalog(args.sessions)
    bench_player(args.minutes, args.segment_s, args.seeks)


if __name__ == "__main__":
    main()
