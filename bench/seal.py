"""Sealing overhead benchmark.

    ./dev bench seal [--mib 256] [--seconds 120] [--dir DIR]

1. Throughput with a flush every 64 KiB: MiB/s of `SealedWriter` (with and without fsync at each
   flush) and of `SealedReader`, next to two references measured in the same run: the same
   64 KiB writes to a plain file (no encryption: the I/O floor), and libsodium's secretstream
   push alone in memory (the crypto ceiling).
2. CPU share at a 3 Mbps stream: feeds N seconds of a 3 Mbit/s stream the way the muxer does
   (about 40 packet writes per second, a flush every second) and prints the CPU seconds used per
   second of recording, with and without fsync at each flush.

Figures depend on the machine and on what else runs; the script prints them, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nacl.bindings as nb
import nacl.public

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from station.crypto.keys import recipient_text  # noqa: E402
from station.crypto.sealed import SealedReader, SealedWriter  # noqa: E402

CHUNK = 64 * 1024
IDENT = nacl.public.PrivateKey.generate()
RCPT = [recipient_text(IDENT.public_key)]
HDR = {"station": "bench", "session": "bench", "seq": 1, "kind": "media"}


def mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / (1 << 20) / seconds if seconds > 0 else float("inf")


def seal_file(path: Path, data: bytes, total: int, fsync: bool) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    with SealedWriter(path, RCPT, HDR, fsync_on_flush=fsync) as w:
        done = 0
        while done < total:
            w.write(data)
            w.flush()
            done += len(data)
    return time.perf_counter() - t0, time.process_time() - c0


def plain_file(path: Path, data: bytes, total: int) -> float:
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as fh:
        done = 0
        while done < total:
            fh.write(data)
            done += len(data)
        os.fsync(fh.fileno())
    return time.perf_counter() - t0


def crypto_only(data: bytes, total: int) -> float:
    state = nb.crypto_secretstream_xchacha20poly1305_state()
    nb.crypto_secretstream_xchacha20poly1305_init_push(
        state, nb.crypto_secretstream_xchacha20poly1305_keygen())
    t0 = time.perf_counter()
    done = 0
    while done < total:
        nb.crypto_secretstream_xchacha20poly1305_push(state, data, b"abcd")
        done += len(data)
    return time.perf_counter() - t0


def read_file(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    with SealedReader(path, [IDENT]) as rd:
        for m in rd.messages():
            n += len(m)
    return n, time.perf_counter() - t0


def stream_cpu(path: Path, seconds: int, fsync: bool, bitrate: int = 3_000_000,
               checkpoints: bool = False) -> float:
    """CPU seconds per second of a `bitrate` stream sealed as the recorder does it; with
    ``checkpoints``, through a SessionSealer that signs a checkpoint before every message."""
    per_s = bitrate // 8
    packets = 40  # 15 fps screen + 25 fps camera; audio packets ride along
    pkt = os.urandom(per_s // packets)
    c0 = time.process_time()
    if checkpoints:
        import nacl.signing

        from station.crypto.session import SessionSealer

        sealer = SessionSealer(path.parent / ("ck" + str(fsync)), "20261207T000000Z-0000beef",
                               "bench", RCPT, nacl.signing.SigningKey.generate(),
                               fsync_on_flush=fsync)
        w = sealer.open_segment(1, "media")
        for _ in range(seconds):
            for _ in range(packets):
                w.write(pkt)
            w.flush()
        sealer.finish()
        return (time.process_time() - c0) / seconds
    with SealedWriter(path, RCPT, HDR, fsync_on_flush=fsync) as w:
        for _ in range(seconds):
            for _ in range(packets):
                w.write(pkt)
            w.flush()
    return (time.process_time() - c0) / seconds


def checkpoint_cpu_us(path: Path, fsync: bool, n: int = 3000) -> float:
    """CPU microseconds per checkpoint line as the sealer writes them before each message."""
    import hashlib

    import nacl.signing

    from station.crypto.session import Checkpoints

    ck = Checkpoints(path, nacl.signing.SigningKey.generate(), "20261207T000000Z-0000beef", fsync)
    h = hashlib.sha256(os.urandom(1 << 16))

    class _W:
        path = Path("seg-000001.media.drseg")

    c0 = time.process_time()
    for i in range(n):
        ck.on_message(_W(), i + 1, (i + 1) << 16, h.copy().hexdigest(), False)  # type: ignore[arg-type]
    cpu = time.process_time() - c0
    ck.close()
    return cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--seconds", type=int, default=120, help="stream length for the CPU test")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    total = args.mib << 20
    data = os.urandom(CHUNK)
    with tempfile.TemporaryDirectory(dir=args.dir) as t:
        d = Path(t)
        print(f"sealing {args.mib} MiB in 64 KiB writes, one message per write")
        crypto_s = crypto_only(data, total)
        plain_s = plain_file(d / "plain.bin", data, total)
        seal_s, seal_cpu = seal_file(d / "a.drseg", data, total, fsync=False)
        size = (d / "a.drseg").stat().st_size
        fs_total = min(total, 64 << 20)
        fsync_s, _ = seal_file(d / "b.drseg", data, fs_total, fsync=True)
        n, read_s = read_file(d / "a.drseg")
        assert n == total
        print(f"  reference: secretstream push only, in memory  {mib_s(total, crypto_s):8.0f} MiB/s")
        print(f"  reference: plain file, 64 KiB writes + fsync    {mib_s(total, plain_s):8.0f} MiB/s")
        print(f"  SealedWriter, flush every 64 KiB               {mib_s(total, seal_s):8.0f} MiB/s"
              f"  (CPU {seal_cpu:.2f} s, overhead {100 * (size - total) / total:.3f} % bytes)")
        print(f"  SealedWriter, flush + fsync every 64 KiB       {mib_s(fs_total, fsync_s):8.0f} MiB/s"
              f"  ({fs_total >> 20} MiB)")
        print(f"  SealedReader                                   {mib_s(total, read_s):8.0f} MiB/s")
        for fsync in (False, True):
            us = checkpoint_cpu_us(d / f"ck{fsync}.log", fsync)
            print(f"one signed checkpoint line{' + fsync' if fsync else '':8s}: {us:.1f} us CPU "
                  "(Ed25519 sign, SHA-256 copy, canonical JSON, append)")
        for fsync in (False, True):
            for ck in (False, True):
                cpu = stream_cpu(d / f"s{fsync}{ck}.drseg", args.seconds, fsync, checkpoints=ck)
                print(f"3 Mbps stream, 40 writes/s, flush every 1 s{' + fsync' if fsync else '':8s}"
                      f"{' + signed checkpoints' if ck else '':23s}: "
                      f"{cpu * 1000:.2f} ms CPU per s = {100 * cpu:.3f} % of one core")


if __name__ == "__main__":
    main()
