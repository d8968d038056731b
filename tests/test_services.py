"""The test services are the real programs: X server, PulseAudio, SeaweedFS, Secret Service."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.services import S3Server, tone

pytestmark = pytest.mark.integration


@pytest.mark.gui
def test_qt_window_drawn_on_xvfb_is_captured_by_mss(display: str, qtbot) -> None:  # type: ignore[no-untyped-def]
    import mss
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QWidget

    w = QWidget()
    pal = w.palette()
    pal.setColor(QPalette.ColorRole.Window, QColor(255, 0, 255))
    w.setPalette(pal)
    w.setAutoFillBackground(True)
    w.setGeometry(100, 120, 300, 200)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(300)
    geo = w.geometry()
    with mss.MSS() as sct:
        shot = sct.grab({"left": geo.x() + 50, "top": geo.y() + 50, "width": 100, "height": 80})
    px = np.frombuffer(shot.raw, np.uint8).reshape(shot.height, shot.width, 4)
    # BGRA: magenta is B=255, G=0, R=255
    assert (px[..., 0] > 240).mean() > 0.95 and (px[..., 1] < 15).mean() > 0.95 and (px[..., 2] > 240).mean() > 0.95


def test_tone_played_into_null_sink_is_recorded_by_sounddevice(audio_sink) -> None:  # type: ignore[no-untyped-def]
    import sounddevice as sd

    rate = 48000
    chunks: list[np.ndarray] = []
    first = threading.Event()

    def cb(indata, frames, t, status):  # type: ignore[no-untyped-def]
        chunks.append(indata[:, 0].copy())
        first.set()

    with sd.InputStream(device="pulse", samplerate=rate, channels=1, dtype="float32", callback=cb):
        assert first.wait(5), "no audio callback within 5 s"
        audio_sink.play_array(tone(1000, 1.0), rate, block=True)
        time.sleep(0.3)
    rec = np.concatenate(chunks)
    spectrum = np.abs(np.fft.rfft(rec))
    freqs = np.fft.rfftfreq(len(rec), 1 / rate)
    assert abs(freqs[np.argmax(spectrum)] - 1000) < 5
    loud = np.convolve(np.abs(rec) > 0.2, np.ones(480), "same") > 0
    assert 0.8 < loud.sum() / rate < 1.3  # about one second of tone came back


def test_null_sink_monitor_answers_at_once_like_a_microphone(audio_sink) -> None:  # type: ignore[no-untyped-def]
    """An idle null sink renders in 2 s blocks: without ./dev's silent keep-alive stream the first
    block came 1.6-1.9 s after the stream started, and PortAudio busy-polled until then."""
    import sounddevice as sd

    started = threading.Event()
    first_at: list[float] = []

    def cb(indata, frames, t, status):  # type: ignore[no-untyped-def]
        if started.is_set() and not first_at:
            first_at.append(time.monotonic())

    t0 = time.process_time()
    with sd.InputStream(device="pulse", samplerate=48000, channels=1, dtype="float32",
                        blocksize=2400, callback=cb) as stream:
        start = time.monotonic()
        started.set()
        deadline = start + 5
        while not first_at and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.active
    cpu = time.process_time() - t0
    assert first_at, "no audio block within 5 s"
    assert first_at[0] - start < 0.4, f"first block {first_at[0] - start:.3f} s after start"
    assert cpu < 0.4, f"{cpu:.2f} CPU s spent waiting for the first block"


def test_seaweedfs_put_get_with_auth_and_rejects_wrong_secret(s3: S3Server, s3_bucket: str) -> None:
    client = s3.client()
    body = b"sealed-bytes" * 1000
    client.put_object(Bucket=s3_bucket, Key="a/b.bin", Body=body)
    got = client.get_object(Bucket=s3_bucket, Key="a/b.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    bad = S3Server(s3.endpoint, s3.access_key, "wrong" + s3.secret_key[5:]).client()
    with pytest.raises(ClientError) as err:
        bad.get_object(Bucket=s3_bucket, Key="a/b.bin")
    assert err.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")


def test_object_lock_bucket_reports_compliance_retention(s3: S3Server, s3_lock_bucket: str) -> None:
    conf = s3.client().get_object_lock_configuration(Bucket=s3_lock_bucket)["ObjectLockConfiguration"]
    assert conf["ObjectLockEnabled"] == "Enabled"
    assert conf["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"


def test_keyring_is_a_real_secret_service_and_round_trips(keyring_service: str) -> None:
    import keyring

    from station.secrets import SecretStore, backend_name

    assert "SecretService" in backend_name()
    store = SecretStore()
    assert store.service == keyring_service
    store.set_bytes("station-signing-key", b"\x00\x01secret")
    assert SecretStore().get_bytes("station-signing-key") == b"\x00\x01secret"
    assert keyring.get_password("some-other-service", "station-signing-key") is None
    token = store.api_token()
    assert len(token) >= 32 and store.api_token() == token
