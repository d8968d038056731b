"""Pipeline behaviour and failure paths: drops, gaps, stop codes, masking hook, clear errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from recorder import encoders
from recorder.encoders import AudioSpec, VideoSpec
from recorder.fake import FakeCameraSource, FakeMicrophoneSource, FakeScreenSource
from recorder.filters import PassThroughFilter
from recorder.items import AudioChunk, DropQueue, VideoFrame
from recorder.pipeline import Pipeline
from recorder.sources import PacedSource, Source, parse_monitor
from recorder.watermark import Watermark
from station.clock import Clock
from station.context import Context
from station.errors import DeviceLost, DiskFull, SecretMissing, StopCode, UsageError
from tests.recordkit import (
    MemSealer,
    MemWriter,
    decode_media,
    make_station,
    plaintext,
    run_pipeline,
    session_segments,
    small_config,
)


def test_full_queue_drops_new_items_and_counts_them() -> None:
    q: DropQueue[int] = DropQueue(3)
    assert [q.offer(i) for i in range(5)] == [True, True, True, False, False]
    q.count_drop(2)
    assert (q.offered, q.dropped) == (7, 4) and q.drain() == [0, 1, 2] and len(q) == 0


def test_monitor_spec_is_validated_with_a_clear_message() -> None:
    assert parse_monitor("2") == 2 and parse_monitor("all") == "all"
    assert parse_monitor("10,20,640,480") == (10, 20, 640, 480)
    for bad in ("0", "x", "1,2,3", "1,2,3,4"):
        with pytest.raises(UsageError, match="monitor"):
            parse_monitor(bad)


class _ScriptedMic(Source):
    """Audio blocks whose capture times follow a script (gaps, jumps)."""

    name = "microphone"

    def __init__(self, clock: Clock, blocks: list[tuple[int, int]]) -> None:
        super().__init__(clock)
        self.blocks = blocks  # (capture offset ms from start, n samples)

    def _run(self) -> None:
        base = self.clock.now_ns() + 100_000_000  # after the gate; released as time passes
        prev = None
        for off_ms, n in self.blocks:
            samples = np.full((n, 1), 0.25, np.float32)
            lost = prev is not None and off_ms - prev > 20  # what PortAudio flags as an overflow
            self._push(AudioChunk(base + off_ms * 1_000_000, 48000, samples, overflow=lost))
            prev = off_ms
        while not self._stop.wait(0.01):
            pass


def test_audio_gap_is_filled_with_silence_and_a_big_jump_reanchors() -> None:
    clock = Clock()
    blocks = [(i * 20, 960) for i in range(10)]            # 0..200 ms continuous
    blocks += [(400 + i * 20, 960) for i in range(60)]      # 200 ms lost (overflow): silence now
    blocks += [(4800 + i * 20, 960) for i in range(5)]      # 3 s jump: re-anchored, reported
    mic = _ScriptedMic(clock, blocks)
    sealer = MemSealer()
    p = Pipeline(clock, small_config(screen=None, camera=None), sealer, microphone=mic)
    run_pipeline(p, 5.4)
    assert p.stop_code == StopCode.NORMAL
    assert 0.18 * 48000 <= p.audio_silence_inserted <= 0.22 * 48000
    assert p.audio_resets == 1
    stats = sealer.closed[-1][1]
    assert [g["kind"] for g in stats["gaps"]] == ["audio-reset"]
    dec = decode_media(bytes(sealer.files[(1, "media")].buf))
    # the lost 200 ms are silence on the timeline, so what follows stays at its capture time
    starts = np.array(dec.audio_start_ms)
    jump = int(np.argmax(np.diff(starts)))
    assert 4400 <= starts[jump + 1] - starts[0] <= 5000  # the jump stays on the timeline
    before = np.abs(np.concatenate(dec.audio[:jump + 1])) > 0.1
    first_silent = int(np.argmin(before[2000:])) + 2000
    resumed = first_silent + int(np.argmax(before[first_silent:]))
    assert abs(resumed / 48 - 400) <= 25  # ms after the first block, as captured


class _FailingCamera(PacedSource):
    name = "camera"
    fps = 10

    def _tick(self, tick: int) -> None:
        if tick == 5:
            raise OSError("USB camera unplugged")
        self._push(VideoFrame(self.clock.now_ns(), np.zeros((240, 320, 3), np.uint8), tick))


def test_device_failure_in_its_thread_stops_the_recording_with_device_lost() -> None:
    clock = Clock()
    sealer = MemSealer()
    stopped: list[tuple[StopCode, BaseException | None]] = []
    p = Pipeline(clock, small_config(audio=None), sealer, screen=FakeScreenSource(clock, fps=10, width=320,
                                                                                  height=240),
                 camera=_FailingCamera(clock), on_stopped=lambda c, e: stopped.append((c, e)))
    run_pipeline(p, 3)
    assert p.stop_code == StopCode.DEVICE_LOST and isinstance(p.error, DeviceLost)
    assert "USB camera unplugged" in str(p.error)
    assert stopped == [(StopCode.DEVICE_LOST, p.error)]
    seq, stats = sealer.closed[-1]
    assert "USB camera unplugged" in stats["error"]
    # what was recorded before the failure was flushed and still decodes
    dec = decode_media(bytes(sealer.files[(seq, "media")].buf))
    assert len(dec.camera_pts_ms) >= 3


def test_encoder_failure_stops_with_encoder_error_and_seals_what_came_before() -> None:
    clock = Clock()
    sealer = MemSealer()
    cfg = small_config(audio=None, camera=None, screen=VideoSpec(640, 480, 10, preset="ultrafast"))
    # the source delivers 320x240 frames: the screen encoder refuses them
    p = Pipeline(clock, cfg, sealer, screen=FakeScreenSource(clock, fps=10, width=320, height=240))
    run_pipeline(p, 2)
    assert p.stop_code == StopCode.ENCODER_ERROR
    assert "does not match" in str(p.error)
    assert sealer.closed and "error" in sealer.closed[-1][1]


class _DelayAndLedger(PassThroughFilter):
    """A masker stand-in: a 2-frame delay line that writes one ledger record per frame."""

    enabled = True

    def __init__(self, policy: Any, **kw: Any) -> None:
        self.held: list[VideoFrame] = []
        self.ledger: list[dict[str, Any]] = []
        self.kw = kw
        self.closed = False

    def push(self, item: VideoFrame) -> list[VideoFrame]:
        self.held.append(item)
        self.ledger.append({"t_ns": item.capture_ns, "rule": "test", "box": [0, 0, 10, 10]})
        out, self.held = self.held[:-2], self.held[-2:]
        return out

    def flush(self) -> list[VideoFrame]:
        out, self.held = self.held, []
        return out

    def ledger_entries(self) -> list[dict[str, Any]]:
        out, self.ledger = self.ledger, []
        return out

    def summary(self) -> dict[str, Any]:
        return {"enabled": True, "engine": "test"}

    def close(self) -> None:
        self.closed = True


def test_masker_delay_line_loses_no_frame_and_its_ledger_is_sealed_per_segment(
        station_home: Path, keyring_service: str) -> None:
    from station.recording import RecordingSession

    st = make_station(station_home, **{"capture.profile": "low", "capture.camera": "",
                                       "masking.enabled": True, "capture.segment_seconds": 2})
    made: list[_DelayAndLedger] = []

    def factory(policy: Any, **kw: Any) -> _DelayAndLedger:
        made.append(_DelayAndLedger(policy, **kw))
        return made[-1]

    rec = RecordingSession(Context(data_dir=station_home, policy_path=st.policy_path), fake_devices=True,
                           masker_factory=factory)
    rec.start()
    time.sleep(3.0)
    summary = rec.stop()
    assert made and made[0].closed and "clock" in made[0].kw and "salt" in made[0].kw
    sdir = Path(summary["session_dir"])
    ledger, frames = [], 0
    for seq in session_segments(sdir):
        data, complete = plaintext(sdir / f"seg-{seq:06d}.masklog.drseg", st.identity)
        assert complete
        ledger += [json.loads(x) for x in data.decode().splitlines()]
        media, _ = plaintext(sdir / f"seg-{seq:06d}.media.drseg", st.identity)
        frames += len(decode_media(media, keep_audio=False).screen_pts_ms)
        man = json.loads((sdir / f"seg-{seq:06d}.manifest.json").read_text())
        assert man["masking"] == {"enabled": True, "engine": "test"}
    assert frames == len(ledger) == summary["streams"]["screen"]["frames"] > 20


def test_missing_recipients_is_a_clear_error_and_creates_no_session(station_home: Path,
                                                                   keyring_service: str) -> None:
    from station.recording import NoRecipients, RecordingSession

    st = make_station(station_home, **{"crypto.recipients": []})
    rec = RecordingSession(Context(data_dir=station_home, policy_path=st.policy_path), fake_devices=True)
    with pytest.raises(NoRecipients, match=r"crypto\.recipients"):
        rec.start()
    assert not (station_home / "spool").exists() or not any((station_home / "spool").iterdir())


def test_missing_signing_key_is_a_clear_error(station_home: Path, keyring_service: str) -> None:
    from station.recording import RecordingSession
    from station.secrets import SIGNING_KEY, SecretStore

    st = make_station(station_home)
    SecretStore().delete(SIGNING_KEY)
    rec = RecordingSession(Context(data_dir=station_home, policy_path=st.policy_path), fake_devices=True)
    with pytest.raises(SecretMissing, match=r"station-signing-key"):
        rec.start()


def test_camera_that_cannot_be_opened_fails_before_anything_is_sealed(station_home: Path,
                                                                      keyring_service: str) -> None:
    from station.recording import RecordingSession

    st = make_station(station_home)
    rec = RecordingSession(Context(data_dir=station_home, policy_path=st.policy_path),
                           camera=str(station_home / "no-such-camera.mp4"), monitor="1")
    with pytest.raises(DeviceLost, match="no-such-camera"):
        rec.start()
    assert not rec.session_dir.exists() and rec.state == "idle"


def test_disk_below_minimum_refuses_to_start(station_home: Path, keyring_service: str) -> None:
    from station.recording import RecordingSession

    st = make_station(station_home, **{"spool.min_free_mb": 9_000_000})
    rec = RecordingSession(Context(data_dir=station_home, policy_path=st.policy_path), fake_devices=True)
    with pytest.raises(DiskFull, match="min_free_mb"):
        rec.start()


def test_spool_over_quota_mid_session_stops_cleanly_with_disk_full(station_home: Path,
                                                                   keyring_service: str) -> None:
    from station.recording import RecordingSession

    st = make_station(station_home, **{"spool.quota_mb": 16, "capture.profile": "low"})
    spool = station_home / "spool"
    spool.mkdir(parents=True)
    (spool / "other-data.bin").write_bytes(b"\0" * (16 * 1024 * 1024 - 4096))  # just below quota
    events: list[tuple[str, dict[str, Any]]] = []
    rec = RecordingSession(Context(data_dir=station_home, policy_path=st.policy_path), fake_devices=True,
                           on_event=lambda n, d: events.append((n, d)))
    rec.start()
    assert rec.wait(20), "the recording did not stop by itself"
    summary = rec.stop()
    assert summary["stop_code"] == "disk-full" and rec.stop_code == StopCode.DISK_FULL
    assert ("stopped", {"session_id": rec.session_id, "code": "disk-full",
                        "error": events[-1][1]["error"]}) == events[-1]
    assert "quota_mb" in events[-1][1]["error"]
    session = json.loads((rec.session_dir / "session.json").read_text())
    assert session["end_reason"] == "disk-full"
    data, complete = plaintext(rec.session_dir / "seg-000001.media.drseg", st.identity)
    assert complete and len(decode_media(data).screen_pts_ms) > 0


def test_watermark_burns_utc_time_station_and_agent() -> None:
    clock = Clock()
    wm = Watermark(clock, "seat-12", "agent-7")
    text = wm.text(clock.t0_ns + 1_500_000_000)
    assert text.startswith(clock.utc(clock.t0_ns + 1_500_000_000).strftime("%Y-%m-%d %H:%M:%S"))
    assert "seat-12" in text and "agent-7" in text
    img = np.full((720, 1280, 3), 128, np.uint8)
    wm.apply(img, clock.t0_ns)
    assert (img[-40:, :300] != 128).any() and (img[:600] == 128).all()


def test_every_segment_starts_with_keyframes_and_is_one_container(tmp_path: Path) -> None:
    clock = Clock()
    sealer = MemSealer()
    cfg = small_config(audio=None, segment_s=1.0)
    p = Pipeline(clock, cfg, sealer, screen=FakeScreenSource(clock, fps=10, width=320, height=240),
                 camera=FakeCameraSource(clock, fps=10, width=320, height=240))
    run_pipeline(p, 2.6)
    assert len(sealer.closed) >= 3
    for (_seq, kind), w in sealer.files.items():
        if kind != "media":
            continue
        with av.open(io.BytesIO(bytes(w.buf))) as c:
            assert [s.metadata.get("title") for s in c.streams] == ["screen", "camera"]
        assert all(decode_media(bytes(w.buf)).keyframe_first)
        assert w.flushes >= 1


class _FakeMss:
    """Stands in for an mss instance whose monitor layout changes (a monitor unplugged)."""

    def __init__(self) -> None:
        self.layouts = [
            [{"left": 0, "top": 0, "width": 640, "height": 240},
             {"left": 0, "top": 0, "width": 320, "height": 240},
             {"left": 320, "top": 0, "width": 320, "height": 240}],
            [{"left": 0, "top": 0, "width": 320, "height": 240},
             {"left": 0, "top": 0, "width": 320, "height": 240}]]
        self._monitors: list[dict[str, int]] | None = None
        self.grabs: list[dict[str, int]] = []

    @property
    def monitors(self) -> list[dict[str, int]]:
        if self._monitors is None:
            self._monitors = self.layouts[0]
        return self._monitors

    def grab(self, area: dict[str, int]) -> Any:
        if area["left"] >= self.layouts[0][0]["width"]:  # the X server's real layout
            raise OSError("BadMatch: the monitor is gone")
        self.grabs.append(area)

        class Shot:
            width, height = area["width"], area["height"]
            raw = bytearray(width * height * 4)
        return Shot()


def test_screen_survives_its_monitor_disappearing_and_reports_the_change() -> None:
    from recorder.sources import ScreenSource

    changes: list[tuple[str, dict[str, Any]]] = []
    src = ScreenSource(Clock(), monitor="2", fps=10, width=320, height=240,
                       on_change=lambda k, d: changes.append((k, d)))
    src._sct = fake = _FakeMss()
    src._area = src._resolve()
    src._layout_checked_ns = src.clock.now_ns()
    q: DropQueue[VideoFrame] = DropQueue(10)
    src.queue = q
    src._tick(0)
    fake.layouts.pop(0)  # monitor 2 unplugged
    src._tick(1)  # the grab fails: layout re-read, frame counted as dropped
    src._tick(2)
    frames = q.drain()
    assert len(frames) == 2 and q.dropped == 1
    assert all(f.image.shape == (240, 320, 4) for f in frames)  # output size never changes
    assert fake.grabs[-1]["left"] == 0  # fell back to the first monitor
    assert changes and changes[0][0] == "screen_layout_changed" and changes[0][1]["monitors"] == 1


@pytest.mark.parametrize("codec", ["aac", "opus"])
def test_audio_codec_from_policy_keeps_beeps_on_the_session_clock(codec: str) -> None:
    from recorder.fake import FakeMicrophoneSource
    from tests.recordkit import onsets_ms

    clock = Clock()
    sealer = MemSealer()
    p = Pipeline(clock, small_config(screen=None, camera=None, audio=AudioSpec(codec=codec)), sealer,
                 microphone=FakeMicrophoneSource(clock))
    run_pipeline(p, 2.3)
    assert p.stop_code == StopCode.NORMAL
    dec = decode_media(bytes(sealer.files[(1, "media")].buf))
    beeps = [b for b in onsets_ms(dec) if b > dec.audio_start_ms[0] + 150]
    assert len(beeps) >= 1 and all(abs(b - round(b / 1000) * 1000) <= 3 for b in beeps), beeps


def test_video_streams_encode_on_their_own_threads_and_every_frame_reaches_the_container(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from recorder.segment_writer import SegmentWriter

    seen: set[tuple[str, str]] = set()
    real_encode = encoders.VideoEncoder.encode

    def spy(self: encoders.VideoEncoder, img: np.ndarray, pts_ms: int) -> list[Any]:
        seen.add((self.name, threading.current_thread().name))
        return real_encode(self, img, pts_ms)

    monkeypatch.setattr(encoders.VideoEncoder, "encode", spy)
    sink = MemWriter()
    spec = VideoSpec(320, 240, 10, preset="ultrafast")
    w = SegmentWriter(sink, screen=spec, camera=spec, audio=AudioSpec(), encode_queue=2)
    rng = np.random.default_rng(1)
    for i in range(30):
        w.write_video("screen", rng.integers(0, 255, (240, 320, 4), np.uint8), i * 100)
        w.write_video("camera", rng.integers(0, 255, (240, 320, 3), np.uint8), i * 100 + 7)
        w.write_audio(np.zeros((4800, 1), np.float32), i * 4800)
    w.close()
    assert seen == {("screen", "enc-screen"), ("camera", "enc-camera")}
    dec = decode_media(bytes(sink.buf))
    assert dec.screen_pts_ms == [i * 100 for i in range(30)]
    assert dec.camera_pts_ms == [i * 100 + 7 for i in range(30)]
    assert all(dec.keyframe_first) and sink.flushes >= 1
    assert not any(t.name.startswith("enc-") and t.is_alive() for t in threading.enumerate())


def test_a_failed_encoder_thread_raises_on_the_pipeline_thread_and_never_blocks_it() -> None:
    from recorder.segment_writer import SegmentWriter
    from station.errors import EncoderError

    w = SegmentWriter(MemWriter(), screen=VideoSpec(320, 240, 10, preset="ultrafast"), camera=None,
                      audio=None, encode_queue=1)
    w.write_video("screen", np.zeros((100, 100, 4), np.uint8), 0)  # wrong size: fails on its thread
    t0 = time.monotonic()
    with pytest.raises(EncoderError, match="does not match"):
        for i in range(1, 50):  # more frames than the queue holds: a dead worker must not block
            w.write_video("screen", np.zeros((240, 320, 4), np.uint8), i * 100)
    assert time.monotonic() - t0 < 5
    w.abort()


def test_watermark_changes_once_a_second_so_still_frames_stay_still() -> None:
    clock = Clock()
    wm = Watermark(clock, "seat-12", "agent-7")
    base = clock.t0_ns + 1_000_000_000 - clock.utc_at_t0_ns % 1_000_000_000  # a whole UTC second
    frames = []
    for offset_ms in (0, 400, 990, 1000):  # three within one UTC second, then the next second
        img = np.full((720, 1280, 3), 90, np.uint8)
        wm.apply(img, base + offset_ms * 1_000_000)
        frames.append(img)
    assert (frames[0] == frames[1]).all() and (frames[0] == frames[2]).all()
    assert (frames[2] != frames[3]).any()
    assert wm.text(base).endswith(" UTC | seat-12 | agent-7") and "." not in wm.text(base).split(" UTC")[0]


def test_watermark_on_screen_and_camera_frames_of_one_size() -> None:
    clock = Clock()
    wm = Watermark(clock, "seat-12", "agent-7")
    now = clock.now_ns()
    screen = wm.apply(np.full((240, 320, 4), 128, np.uint8), now)
    camera = wm.apply(np.full((240, 320, 3), 128, np.uint8), now)  # same size, other channels
    luma = wm.apply(np.full((360, 320), 128, np.uint8), now)[:240]  # I420 planes of that size
    assert (screen[..., :3] == camera).all() and (camera[..., 0] == luma).all()
    assert (camera[-30:, :200] != 128).any() and (camera[:150] == 128).all()


def test_station_process_starts_no_blas_thread_pool() -> None:
    """numpy's OpenBLAS would start a spinning worker per extra core; the CLI turns the pool off."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    code = "import os, station.cli, numpy; print(len(os.listdir('/proc/self/task')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "1"


class _LateCamera(FakeCameraSource):
    """A camera whose first frame comes 0.6 s after it started (a slow device open)."""

    def _run(self) -> None:
        if not self._stop.wait(0.6):
            super()._run()


def test_frames_dropped_before_the_gate_count_in_no_segment() -> None:
    clock = Clock()
    sealer = MemSealer()
    # a 4-frame screen queue fills while the pipeline waits for the camera's first frame
    cfg = small_config(audio=None, queue_s=0.05)
    screen = FakeScreenSource(clock, fps=30, width=320, height=240)
    p = Pipeline(clock, cfg, sealer, screen=screen,
                 camera=_LateCamera(clock, fps=10, width=320, height=240))
    run_pipeline(p, 1.0)
    assert p.queues["screen"].dropped == 0  # the pre-roll drops were reset at the gate
    streams = sealer.closed[-1][1]["streams"]
    assert streams["screen"]["dropped"] == 0 and streams["camera"]["dropped"] == 0, streams


def test_a_stalled_encoder_drops_video_frames_but_no_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    real_encode = encoders.VideoEncoder.encode
    stalled = threading.Event()

    def slow(self: encoders.VideoEncoder, img: np.ndarray, pts_ms: int) -> list[Any]:
        if self.frames == 5 and not stalled.is_set():  # a starved encoder thread, once, for 2.5 s
            stalled.set()
            time.sleep(2.5)
        return real_encode(self, img, pts_ms)

    monkeypatch.setattr(encoders.VideoEncoder, "encode", slow)
    clock = Clock()
    sealer = MemSealer()
    cfg = small_config(camera=None, queue_s=0.5)
    p = Pipeline(clock, cfg, sealer, screen=FakeScreenSource(clock, fps=10, width=320, height=240),
                 microphone=FakeMicrophoneSource(clock))
    run_pipeline(p, 4.5)
    assert stalled.is_set() and p.stop_code == StopCode.NORMAL
    streams = sealer.closed[-1][1]["streams"]
    assert streams["screen"]["dropped"] > 0, streams  # the video queue (0.5 s) overflowed
    assert streams["audio"]["dropped"] == 0 and p.audio_silence_inserted == 0, streams


def test_screen_frames_carry_the_cursor_where_the_pointer_is(display: str) -> None:
    """The cursor is blended in with numpy: frames equal mss's own (Python-loop) merge, and the
    pixels that differ from a grab without the cursor sit at the pointer that xdotool placed."""
    import mss

    from recorder.sources import ScreenSource

    subprocess.run(["xdotool", "mousemove", "700", "500"], check=True)
    area = {"left": 600, "top": 400, "width": 200, "height": 200}
    frames = {}
    for cursor in (True, False):
        src = ScreenSource(Clock(), monitor="600,400,200,200", fps=10, width=200, height=200,
                           draw_cursor=cursor)
        src._open()
        src.queue = q = DropQueue(2)
        src._tick(0)
        src._close()
        frames[cursor] = q.drain()[0].image[..., :3].astype(int)
    with mss.MSS(with_cursor=True) as sct:
        reference = np.frombuffer(sct.grab(area).raw, np.uint8).reshape(200, 200, 4)[..., :3].astype(int)
    assert np.abs(frames[True] - reference).max() <= 1  # rounding of the blend
    ys, xs = np.nonzero(np.any(frames[True] != frames[False], axis=2))
    assert len(ys) > 20  # the X cursor is drawn ...
    assert 80 <= xs.min() <= 100 <= xs.max() <= 130 and 80 <= ys.min() <= 100 <= ys.max() <= 130  # ... at 700,500


@pytest.mark.parametrize("pointer", [(700, 500), (604, 406), (795, 597), (590, 390)])
def test_i420_screen_frames_come_from_the_shared_segment_and_equal_the_bgra_path(
        display: str, pointer: tuple[int, int]) -> None:
    """Without a masker the screen is converted to I420 straight from mss's shared segment (no
    copy) and the cursor is patched into the planes: the frame equals the BGRA path's frame,
    cursor included, converted afterwards, wherever the cursor is (inside, at odd offsets,
    cut by the edges). A region of another size is scaled, then converted."""
    import cv2

    from recorder.sources import ScreenSource

    subprocess.run(["xdotool", "mousemove", *map(str, pointer)], check=True)

    def grab(i420: bool, monitor: str = "601,401,200,200", size: tuple[int, int] = (200, 200)) -> VideoFrame:
        src = ScreenSource(Clock(), monitor=monitor, fps=10, width=size[0], height=size[1], i420=i420)
        src._open()
        assert (src._shm_grab is not None) == i420  # MIT-SHM works on Xvfb: the copy-free grab
        src.queue = q = DropQueue(2)
        src._tick(0)
        src._close()
        return q.drain()[0]

    for _attempt in range(3):  # the screen must stand still between the grabs
        before, planes, after = grab(False), grab(True), grab(False)
        if np.array_equal(before.image, after.image):
            break
    assert planes.i420 and not before.i420 and planes.image.shape == (300, 200)
    assert np.array_equal(planes.image, cv2.cvtColor(before.image, cv2.COLOR_BGRA2YUV_I420))
    scaled = grab(True, monitor="600,400,400,300", size=(320, 240))
    assert scaled.i420 and scaled.image.shape == (360, 320)


def test_paused_card_for_i420_screen_frames_is_grey_with_neutral_chroma() -> None:
    p = Pipeline(Clock(), small_config(camera=None, audio=None), MemSealer())
    card = p._paused_card(np.zeros((360, 320), np.uint8))
    assert card.shape == (360, 320)
    assert (card[240:] == 128).all()  # U and V neutral: no colour cast
    luma = card[:240]
    assert (luma == 48).mean() > 0.8 and luma.max() >= 200  # grey with the white "PAUSED" text


def test_a_paused_i420_screen_records_the_grey_card_for_the_pause_only(display: str) -> None:
    """A real screen source in I420 (masking off) through pause and resume: the frames captured
    during the pause decode as the grey, colourless card, the others do not."""
    from recorder.sources import ScreenSource

    clock = Clock()
    sealer = MemSealer()
    p = Pipeline(clock, small_config(camera=None, audio=None), sealer,
                 screen=ScreenSource(clock, monitor="0,0,320,240", fps=10, width=320, height=240, i420=True))
    p.start()
    time.sleep(0.8)
    p.pause("customer reads card number")
    time.sleep(0.8)
    p.resume()
    time.sleep(0.8)
    p.stop()
    gap = next(g for g in sealer.closed[0][1]["gaps"] if g["kind"] == "pause")

    def planes(frame: Any) -> tuple[float, float]:
        yuv = frame.to_ndarray(format="yuv420p")
        return float(np.median(yuv[:240])), float(np.abs(yuv[240:].astype(int) - 128).mean())

    dec = decode_media(bytes(sealer.files[(1, "media")].buf), keep_screen=planes)
    inside = [f for t, f in zip(dec.screen_pts_ms, dec.screen_frames, strict=True)
              if gap["start_pts_ms"] + 60 <= t < gap["end_pts_ms"] - 60]
    outside = [f for t, f in zip(dec.screen_pts_ms, dec.screen_frames, strict=True)
               if not gap["start_pts_ms"] - 60 <= t < gap["end_pts_ms"] + 60]
    assert len(inside) >= 5 and len(outside) >= 10
    assert all(abs(luma - 48) <= 2 and chroma < 2 for luma, chroma in inside)
    assert not any(abs(luma - 48) <= 2 and chroma < 2 for luma, chroma in outside)
