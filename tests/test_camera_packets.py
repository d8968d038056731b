"""A file/URL camera: OpenCV demuxes, PyAV decodes straight into I420 (no BGR round trip), and
what reaches the container is the camera's own picture, watermark included."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from recorder.encoders import VideoSpec
from recorder.items import DropQueue, VideoFrame
from recorder.pipeline import Pipeline
from recorder.sources import CameraSource
from recorder.watermark import Watermark
from station.clock import Clock
from tests.recordkit import MemSealer, make_video, run_pipeline, small_config


def pyav_pictures(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray() for f in c.decode(video=0)]


def capture(src: CameraSource, n: int, timeout_s: float = 20.0) -> list[VideoFrame]:
    q: DropQueue[VideoFrame] = DropQueue(1000)
    src.start(q)
    got: list[VideoFrame] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += q.drain()
        time.sleep(0.01)
    src.stop()
    src.check()
    return got[:n]


@pytest.fixture(scope="module")
def bframes_h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # x264's default preset uses B-frames: pictures come out of the decoder in another order
    # than packets go in, and the last ones only when the decoder is drained at the end
    return make_video(tmp_path_factory.mktemp("cam") / "cam.mkv", size="320x240", rate=10, frames=10,
                      codec=("-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p"))


def test_h264_file_camera_delivers_its_own_i420_pictures_in_order_across_loops(bframes_h264: Path) -> None:
    ref = pyav_pictures(bframes_h264)
    assert len(ref) == 10
    src = CameraSource(Clock(), str(bframes_h264), width=320, height=240, fps=100)
    src.open()
    assert src.info["decoder"] == "pyav-h264"
    frames = capture(src, 25)
    assert len(frames) == 25 and all(f.i420 for f in frames)
    assert frames[0].image.shape == (360, 320)
    # the file loops: picture k is the file's picture k mod 10, bit for bit, in display order
    for k, f in enumerate(frames):
        assert np.array_equal(f.image, ref[k % 10]), f"picture {k}"


def test_i420_picture_is_what_opencv_itself_decodes(bframes_h264: Path) -> None:
    src = CameraSource(Clock(), str(bframes_h264), width=320, height=240, fps=100)
    ours = [cv2.cvtColor(f.image, cv2.COLOR_YUV2BGR_I420) for f in capture(src, 10)]
    cap = cv2.VideoCapture(str(bframes_h264), cv2.CAP_FFMPEG)
    theirs = [cap.read()[1] for _ in range(10)]
    cap.release()
    for a, b in zip(ours, theirs, strict=True):
        # same decoded picture; only the two YUV->BGR conversions' rounding differs
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def test_other_sizes_are_fitted_as_bgr(tmp_path: Path) -> None:
    path = make_video(tmp_path / "big.mp4", size="640x480", rate=10, frames=5)
    src = CameraSource(Clock(), str(path), width=320, height=180, fps=100)
    frames = capture(src, 5)
    assert src.info["decoder"] == "pyav-h264"
    assert [f.i420 for f in frames] == [False] * 5
    assert frames[0].image.shape == (180, 320, 3)
    # 4:3 into 16:9: letterboxed, black bars left and right, picture in the middle
    img = frames[0].image
    assert img[:, :16].max() == 0 and img[:, -16:].max() == 0 and img[:, 100:220].mean() > 40


def test_a_codec_without_a_packet_decoder_falls_back_to_opencv(tmp_path: Path) -> None:
    path = make_video(tmp_path / "lossless.mkv", size="320x240", rate=10, frames=5, codec=("-c:v", "ffv1"))
    src = CameraSource(Clock(), str(path), width=320, height=240, fps=100)
    frames = capture(src, 5)
    assert src.info["decoder"] == "opencv"
    assert [f.i420 for f in frames] == [False] * 5 and frames[0].image.shape == (240, 320, 3)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert np.array_equal(frames[0].image, cap.read()[1])
    cap.release()


@pytest.mark.parametrize("h", [240, 250])  # 250: the chroma planes are not whole rows (h / 2 odd)
def test_watermark_on_i420_writes_luma_and_neutral_chroma_in_its_box_only(h: int) -> None:
    clock = Clock()
    wm = Watermark(clock, "seat-12", "agent-7")
    w = 320
    yuv = np.concatenate([np.full((h, w), 150, np.uint8), np.full((h // 2, w), 90, np.uint8)])
    bgr = np.full((h, w, 3), 150, np.uint8)
    now = clock.now_ns()
    wm.apply(yuv, now)
    wm.apply(bgr, now)
    gray = bgr[..., 0]
    assert np.array_equal(yuv[:h], gray)  # the luma is the grey frame's watermark
    flat = yuv.reshape(-1)
    u = flat[h * w:h * w * 5 // 4].reshape(h // 2, w // 2)
    v = flat[h * w * 5 // 4:].reshape(h // 2, w // 2)
    box = gray != 150
    ys, xs = np.nonzero(box)
    for plane in (u, v):
        assert (plane[ys.min() // 2:, :xs.max() // 2] == 128).all()  # a neutral box
        assert (plane[:ys.min() // 2 - 1] == 90).all()  # the rest of the picture keeps its colour


def test_camera_file_is_recorded_without_conversion_and_watermarked(bframes_h264: Path) -> None:
    clock = Clock()
    sealer = MemSealer()
    cam = CameraSource(clock, str(bframes_h264), width=320, height=240, fps=10)
    p = Pipeline(clock, small_config(screen=None, audio=None, camera=VideoSpec(320, 240, 10, crf=18)),
                 sealer, camera=cam, watermark=Watermark(clock, "seat-12", "agent-7"))
    run_pipeline(p, 2.0)
    ref = pyav_pictures(bframes_h264)
    with av.open(io.BytesIO(bytes(sealer.files[(1, "media")].buf))) as c:
        got = [f.to_ndarray() for f in c.decode(video=0)]
    assert len(got) >= 15
    assert p.totals["camera"].encoded == len(got)
    matched = []
    for k, pic in enumerate(got):
        # above the watermark it is the camera's own picture (the gate may have cut the first)
        diffs = [np.abs(pic[:200].astype(int) - r[:200].astype(int)).mean() for r in ref]
        matched.append(int(np.argmin(diffs)))
        assert min(diffs) < 3, f"picture {k} differs by {min(diffs):.1f}"
        assert pic[220:240, 10:200].max() > 200  # the watermark's bright text in the luma
    assert all((b - a) % 10 == 1 for a, b in zip(matched, matched[1:], strict=False)), matched
    thumb = p.health()["camera_thumbnail"]
    assert thumb.shape == (90, 160, 3)


def test_encoder_takes_i420_planes_as_they_are_and_refuses_a_wrong_shape() -> None:
    from recorder.encoders import VideoEncoder
    from station.errors import EncoderError

    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as c:
        enc = VideoEncoder(c, "camera", VideoSpec(320, 240, 10, preset="ultrafast", crf=10))
        yuv = np.concatenate([np.full((240, 320), 200, np.uint8), np.full((120, 320), 60, np.uint8)])
        packets = [p for k in range(3) for p in enc.encode(yuv, k * 100)] + enc.flush()
        with pytest.raises(EncoderError, match="does not match"):
            enc.encode(np.zeros((240, 320), np.uint8), 400)  # a grey picture is not I420
        for p in packets:
            c.mux(p)
    with av.open(io.BytesIO(out.getvalue())) as c:
        pic = next(c.decode(video=0)).to_ndarray()
    # the planes went in unconverted: Y ~200, U and V ~60 (a BGR reading would have moved them)
    assert abs(int(pic[:240].mean()) - 200) <= 2 and abs(int(pic[240:].mean()) - 60) <= 2
