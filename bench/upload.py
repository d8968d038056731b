"""Upload throughput: sealed segments through the uploader vs plain boto3 ``upload_file``.

    ./dev bench upload [--size-mb 1024] [--segment-mb 64] [--part-mb 8] [--concurrency 2]

Seals ``--size-mb`` of random media into a spool with SessionSealer, then uploads the same files
twice to the SeaweedFS that ``./dev bench`` started (auth enforced), into two fresh buckets:

1. plain boto3 ``upload_file`` per file, ``TransferConfig`` with the same part size, threshold and
   concurrency (the reference), once before and once after the uploader (their mean is used);
2. the uploader's ``drain()``: hash pass, Content-MD5 on every part, If-None-Match, journal,
   HEAD verification, purge (everything the product does).

Prints MiB/s of both, the ratio (target >= 0.8) and client CPU seconds per GiB (this process,
all threads: user + system). The S3 server runs on the same machine and competes for the CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import nacl.public
import nacl.signing
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from station.crypto.session import SessionSealer
from station.policy import Policy
from uploader.bandwidth import TokenBucket
from uploader.journal import Journal
from uploader.service import Uploader, upload_rate_bytes_s
from uploader.stores import S3Store, s3_settings

MiB = 1024 * 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def seal(spool: Path, size_mb: int, segment_mb: int) -> tuple[Path, int]:
    sid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    sealer = SessionSealer(spool / sid, sid, "bench-seat", [nacl.public.PrivateKey.generate().public_key],
                           nacl.signing.SigningKey.generate())
    left, seq = size_mb * MiB, 0
    block = os.urandom(4 * MiB)
    while left > 0:
        seq += 1
        seg = min(segment_mb * MiB, left)
        w = sealer.open_segment(seq, "media")
        done = 0
        while done < seg:
            n = min(len(block), seg - done)
            w.write(block[:n] if n < len(block) else os.urandom(16) + block[16:])
            done += n
            w.flush()
        for kind in ("oplog", "masklog"):
            sealer.open_segment(seq, kind).write(b"{}\n")
        sealer.close_segment(seq, {})
        left -= seg
    sealer.finish("normal")
    total = sum(p.stat().st_size for p in (spool / sid).iterdir())
    return spool / sid, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--segment-mb", type=int, default=64)
    ap.add_argument("--part-mb", type=int, default=8)
    ap.add_argument("--threshold-mb", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--no-limiter", action="store_true", help="no bandwidth limiter attached (as when "
                    "upload.bandwidth_kbps = 0 and upload.during_call = run)")
    args = ap.parse_args()
    endpoint = os.environ.get("STATION_TEST_S3_ENDPOINT")
    if not endpoint:
        print("run through ./dev bench upload (it starts SeaweedFS)", file=sys.stderr)
        return 2
    ak, sk = os.environ["STATION_TEST_S3_ACCESS_KEY"], os.environ["STATION_TEST_S3_SECRET_KEY"]
    work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    spool = work / "spool"
    spool.mkdir()
    t0 = time.perf_counter()
    session_dir, total = seal(spool, args.size_mb, args.segment_mb)
    files = sorted(p for p in session_dir.iterdir() if p.is_file())
    print(f"sealed {total / MiB:.0f} MiB in {len(files)} files in {time.perf_counter() - t0:.1f} s")

    admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ak,
                         aws_secret_access_key=sk, config=Config(s3={"addressing_style": "path"}))
    ref_bucket, our_bucket = "bench-ref-" + uuid.uuid4().hex[:8], "bench-up-" + uuid.uuid4().hex[:8]
    admin.create_bucket(Bucket=ref_bucket)
    admin.create_bucket(Bucket=our_bucket)

    # 1. plain boto3 upload_file, same part size / threshold / concurrency; run before and after
    #    the uploader (A-B-A) so that a machine getting busier or quieter does not favour either
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ak,
                          aws_secret_access_key=sk,
                          config=Config(s3={"addressing_style": "path"},
                                        max_pool_connections=2 * args.concurrency + 4))
    tc = TransferConfig(multipart_threshold=args.threshold_mb * MiB, multipart_chunksize=args.part_mb * MiB,
                        max_concurrency=args.concurrency, use_threads=True)

    def reference(run: int) -> tuple[float, float]:
        c0, w0 = cpu_s(), time.perf_counter()
        for p in files:
            client.upload_file(str(p), ref_bucket, f"ref{run}/{session_dir.name}/{p.name}", Config=tc)
        return time.perf_counter() - w0, cpu_s() - c0

    ref_runs = [reference(1)]
    ours_spool = work / "spool-uploader"
    shutil.copytree(spool, ours_spool)  # the uploader purges what it uploaded

    # 2. the uploader, as the station runs it (bandwidth limiter attached, uncapped)
    pol = Policy.defaults().replace(
        storage__kind="s3", storage__s3_endpoint=endpoint, storage__s3_bucket=our_bucket,
        storage__object_lock="ignore", upload__part_size_mb=args.part_mb,
        upload__multipart_threshold_mb=args.threshold_mb, upload__concurrency=args.concurrency)
    limiter = None if args.no_limiter else TokenBucket(lambda: upload_rate_bytes_s(pol, False))
    store = S3Store(s3_settings(pol), ak, sk, limiter=limiter)
    up = Uploader(store, Journal(work / "journal.sqlite"), ours_spool, pol, station_id="bench-seat")
    c0, w0 = cpu_s(), time.perf_counter()
    result = up.drain()
    our_wall, our_cpu = time.perf_counter() - w0, cpu_s() - c0
    up.close()
    if result["error"] or (ours_spool / session_dir.name).exists():
        print(f"uploader failed: {result['error']}", file=sys.stderr)
        return 1
    ref_runs.append(reference(2))
    ref_wall = sum(w for w, _ in ref_runs) / len(ref_runs)
    ref_cpu = sum(c for _, c in ref_runs) / len(ref_runs)

    gib = total / (1024 * MiB)
    ref_rate, our_rate = total / MiB / ref_wall, total / MiB / our_wall
    print(f"size {total / MiB:.0f} MiB, part {args.part_mb} MiB, concurrency {args.concurrency}, "
          f"{len(files)} objects")
    print(f"boto3 upload_file : {ref_rate:7.1f} MiB/s  {ref_wall:6.1f} s  CPU {ref_cpu / gib:5.2f} s/GiB"
          f"  (mean of runs before and after: "
          f"{', '.join(f'{total / MiB / w:.1f}' for w, _ in ref_runs)} MiB/s)")
    print(f"uploader drain    : {our_rate:7.1f} MiB/s  {our_wall:6.1f} s  CPU {our_cpu / gib:5.2f} s/GiB"
          "  (hash, MD5 parts, journal, HEAD verify, purge)")
    print(f"ratio uploader/boto3: {our_rate / ref_rate:.2f} (target >= 0.8)")
    for b in (ref_bucket, our_bucket):  # free the server's disk
        for page in admin.get_paginator("list_objects_v2").paginate(Bucket=b):
            for o in page.get("Contents", []):
                admin.delete_object(Bucket=b, Key=o["Key"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
