"""MP4 video for LeRobot v3.0 datasets with PyAV: streaming encoder, probe, timestamped decode.

Timing contract (what LeRobot's decoders check): frame k of an episode is presented at exactly
from_timestamp + k/fps, and a decoded frame counts only if its presentation time is within
tolerance_s (1e-4 s by default) of the requested time. The encoder therefore stamps frame k
with pts = k in a 1/fps time base; the MP4 muxer rescales that to its own timescale exactly
(15360 for 30 fps), so no rounding reaches 1e-4 s.

Codecs: AV1 via libsvtav1 (LeRobot's default) or H.264 via libx264, both yuv420p, which
LeRobot reads with torchcodec or PyAV. gop=2 (a keyframe every 2 frames) is LeRobot's default:
it makes random access during training cheap at the cost of file size.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from armstack_recorder.stats import ImageStatsAccumulator

logger = logging.getLogger(__name__)

CODECS = ("libsvtav1", "libx264")
# codec name as FFmpeg reports the stream (info.json "video.codec")
CANONICAL_CODEC = {"libsvtav1": "av1", "libx264": "h264"}
PIX_FMTS = ("yuv420p",)
DEFAULT_TOLERANCE_S = 1e-4


class FrameTimestampError(ValueError):
    """A requested timestamp has no frame within the tolerance."""


@dataclass
class VideoConfig:
    """Encoder settings; validated on construction (errors name the field)."""

    codec: str = "libsvtav1"  # one of CODECS
    crf: int = 30  # constant rate factor: lower is better quality, bigger files
    gop: int = 2  # keyframe interval in frames (LeRobot's default g=2)
    # libsvtav1: "0".."13" (None -> "12", the fastest); libx264: "ultrafast".."veryslow"
    preset: str | None = None
    pix_fmt: str = "yuv420p"
    threads: int | None = None  # encoder threads per camera; None lets the codec decide

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"VideoConfig.codec must be one of {CODECS}, got {self.codec!r}")
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 63:
            raise ValueError(f"VideoConfig.crf must be an int in [0, 63], got {self.crf!r}")
        if not isinstance(self.gop, int) or self.gop < 1:
            raise ValueError(f"VideoConfig.gop must be an int >= 1, got {self.gop!r}")
        if self.pix_fmt not in PIX_FMTS:
            raise ValueError(f"VideoConfig.pix_fmt must be one of {PIX_FMTS}, got {self.pix_fmt!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError("VideoConfig.threads must be None or an int >= 1, "
                             f"got {self.threads!r}")
        if self.preset is not None and not isinstance(self.preset, str):
            raise ValueError(f"VideoConfig.preset must be None or a string, got {self.preset!r}")

    @property
    def canonical_codec(self) -> str:
        return CANONICAL_CODEC[self.codec]

    def codec_options(self) -> dict[str, str]:
        opts = {"g": str(self.gop), "crf": str(self.crf)}
        if self.codec == "libsvtav1":
            opts["preset"] = self.preset or "12"
            if self.threads is not None:
                opts["svtav1-params"] = f"lp={self.threads}"
        else:
            if self.preset is not None:
                opts["preset"] = self.preset
            if self.threads is not None:
                opts["threads"] = str(self.threads)
        return opts


@dataclass
class EncodeResult:
    path: Path
    frames: int
    stats: dict[str, np.ndarray]  # per-channel image stats, see stats.ImageStatsAccumulator
    encode_s: float  # time the worker spent encoding (excludes waiting for frames)
    max_queue_depth: int


_SENTINEL = None


class StreamingEncoder:
    """Encodes one camera's frames for one episode into an MP4 on a worker thread.

    put() only copies the frame into a bounded queue, so the recording loop stays cheap while
    the codec runs (PyAV releases the GIL while encoding). When the queue is full put() blocks
    rather than drop a frame: a demonstration with a missing frame no longer lines up with its
    actions. finish() flushes the codec, closes and fsyncs the file and returns its stats.
    """

    def __init__(self, path: Path, *, width: int, height: int, fps: int, config: VideoConfig,
                 queue_size: int, name: str = "camera") -> None:
        self.path = path
        self._width, self._height, self._fps = width, height, fps
        self._config = config
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=queue_size)
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self._stats = ImageStatsAccumulator(3)
        self._frames = 0
        self._encode_s = 0.0
        self._max_depth = 0
        self._blocked_s = 0.0
        self._finished = False
        if config.codec == "libsvtav1":
            # SVT-AV1 prints a ~20-line banner per encoder (every camera, every episode) to
            # stderr unless told otherwise; 1 = errors only. An explicit SVT_LOG wins.
            os.environ.setdefault("SVT_LOG", "1")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"encoder-{name}", daemon=True)
        self._thread.start()

    @property
    def blocked_s(self) -> float:
        """Total time put() waited for room in the queue (encoder slower than real time)."""
        return self._blocked_s

    def put(self, frame: np.ndarray) -> None:
        """Queue one (H, W, 3) uint8 RGB frame; copies it (camera drivers reuse buffers)."""
        if self._finished:
            raise RuntimeError(f"encoder for {self.path.name} is already finished")
        item = np.array(frame, dtype=np.uint8, copy=True, order="C")
        t0 = time.perf_counter()
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        waited = time.perf_counter() - t0
        if waited > 0.05:
            self._blocked_s += waited
        self._max_depth = max(self._max_depth, self._queue.qsize())

    def finish(self) -> EncodeResult:
        """Wait for every queued frame to be encoded; the file is complete and fsync'ed."""
        self._finished = True
        self._put_sentinel()
        self._thread.join()
        self._raise_if_failed()
        if self._frames == 0:
            raise RuntimeError(f"encoder for {self.path.name} received no frame")
        return EncodeResult(self.path, self._frames, self._stats.result(), self._encode_s,
                            self._max_depth)

    def cancel(self) -> None:
        """Stop without finishing the file and delete it."""
        self._finished = True
        self._cancel.set()
        self._put_sentinel()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _put_sentinel(self) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_SENTINEL, timeout=0.2)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"video encoder for {self.path.name} failed: {self._error}") \
                from self._error

    def _run(self) -> None:
        try:
            with av.open(str(self.path), "w", format="mp4") as container:
                stream = container.add_stream(self._config.codec, rate=self._fps,
                                              options=self._config.codec_options())
                stream.width, stream.height = self._width, self._height
                stream.pix_fmt = self._config.pix_fmt
                stream.time_base = Fraction(1, self._fps)
                self._encode_loop(container, stream)
                # flush delayed frames; on cancel too, only not kept: SVT-AV1 complains on
                # stderr about an encoder closed without its end of stream
                for packet in stream.encode():
                    if not self._cancel.is_set():
                        container.mux(packet)
            if not self._cancel.is_set():
                with open(self.path, "rb+") as f:
                    os.fsync(f.fileno())
        except BaseException as exc:  # surfaced to the caller by put()/finish()
            logger.error("video encoder for %s failed: %s", self.path.name, exc)
            self._error = exc
            self._drain()

    def _encode_loop(self, container: av.container.OutputContainer, stream: av.VideoStream) -> None:
        time_base = Fraction(1, self._fps)
        while True:
            frame = self._queue.get()
            if frame is _SENTINEL:
                return
            if self._cancel.is_set():
                continue  # drain quickly without encoding
            if frame.shape != (self._height, self._width, 3):
                raise ValueError(f"frame shape {frame.shape} != ({self._height}, {self._width}, 3)")
            t0 = time.perf_counter()
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = self._frames  # frame k is shown at k/fps: see module doc
            vf.time_base = time_base
            for packet in stream.encode(vf):
                container.mux(packet)
            self._stats.update(frame)
            self._frames += 1
            self._encode_s += time.perf_counter() - t0

    def _drain(self) -> None:
        """After a failure keep consuming so no producer blocks forever on a full queue."""
        while True:
            try:
                if self._queue.get(timeout=0.2) is _SENTINEL:
                    return
            except queue.Empty:
                if self._finished:
                    return


@dataclass
class VideoProbe:
    codec: str
    width: int
    height: int
    pix_fmt: str
    fps: float  # the stream's base (nominal) frame rate
    frame_times_s: np.ndarray = field(repr=False)  # (N,) presentation times, sorted
    has_audio: bool = False

    def info_block(self) -> dict:
        """The "info" entry of a video feature in info.json (LeRobot's get_video_info keys)."""
        return {
            "video.height": self.height,
            "video.width": self.width,
            "video.codec": self.codec,
            "video.pix_fmt": self.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(round(self.fps)),
            "video.channels": 3,
            "has_audio": self.has_audio,
        }


def probe_video(path: Path) -> VideoProbe:
    """Stream parameters and the presentation time of every frame (demux only, no decoding)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        tb = stream.time_base
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
        times = np.sort(np.array([float(p * tb) for p in pts], dtype=np.float64))
        return VideoProbe(
            codec=stream.codec_context.codec.name if stream.codec_context else "",
            width=stream.width, height=stream.height, pix_fmt=stream.pix_fmt or "",
            fps=float(stream.base_rate or stream.average_rate or 0), frame_times_s=times,
            has_audio=bool(container.streams.audio))


def canonical_codec_name(name: str) -> str:
    """Decoder names (libdav1d, libaom-av1) to the codec's canonical name (av1)."""
    try:
        return av.codec.Codec(name, "r").canonical_name
    except Exception:  # unknown to this FFmpeg build: keep the name as reported
        return name


def decode_frames(path: Path, timestamps_s: list[float] | np.ndarray,
                  tolerance_s: float = DEFAULT_TOLERANCE_S) -> np.ndarray:
    """Decode the frames shown at the given times (seconds in the file), (T, H, W, 3) uint8 RGB.

    Raises FrameTimestampError when no frame lies within tolerance_s of a requested time, the
    same rule LeRobot's decoders apply.
    """
    targets = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    out: list[np.ndarray | None] = [None] * targets.size
    with av.open(str(path)) as container:
        cursor = _DecodeCursor(container)
        for i in np.argsort(targets, kind="stable"):
            out[i] = cursor.frame_at(float(targets[i]), tolerance_s)
            if out[i] is None:
                raise FrameTimestampError(
                    f"{path}: no frame within {tolerance_s} s of t={targets[i]:.6f} s "
                    f"(decoding stopped at a frame shown at {cursor.time:.6f} s)")
    if not out:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(out)


class _DecodeCursor:
    """Forward decoding position in one video stream, re-seeking only when it must."""

    # Decoding forward beats a seek for short hops; beyond this, seek to the nearest keyframe.
    MAX_FORWARD_S = 1.0

    def __init__(self, container: av.container.InputContainer) -> None:
        self._container = container
        self._stream = container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._frames = None
        self._last: av.VideoFrame | None = None
        self._last_image: np.ndarray | None = None
        self.time = -np.inf

    def _seek(self, target: float) -> None:
        offset = max(0, int(target / self._stream.time_base))
        self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._last, self._last_image, self.time = None, None, -np.inf

    def _image(self) -> np.ndarray:
        if self._last_image is None:
            self._last_image = self._last.to_ndarray(format="rgb24")
        return self._last_image

    def frame_at(self, target: float, tol: float) -> np.ndarray | None:
        if self._last is not None and abs(self.time - target) < tol:
            return self._image()
        if self._frames is None or target < self.time or target > self.time + self.MAX_FORWARD_S:
            self._seek(target)
        for frame in self._frames:
            self._last, self._last_image = frame, None
            self.time = float(frame.pts * frame.time_base)
            if abs(self.time - target) < tol:
                return self._image()
            if self.time > target + tol:
                return None
        return None
