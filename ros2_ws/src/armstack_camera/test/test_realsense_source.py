"""RealSenseSource through the real librealsense pipeline, fed by its software device.

No camera is needed: SoftwareDeviceBackend injects colour and depth frames into an
rs.software_device, and they go through the SDK's syncer and rs.align as a device's would.
A recording made from the software device is also played back through PipelineBackend (the
rs.pipeline path a real device and a recording file take).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from armstack_camera.realsense_source import PipelineBackend, RealSenseSource


def read_frames(
    synthetic_rs,
    source,
    backend,
    n: int,
    t0_ms: float | None = None,
    domain: str = "hardware_clock",
    paced: bool = False,
):
    """Push n frame pairs 1/30 s apart in device time (at least that apart in host time when
    `paced`, as a device delivers them) and read after each."""
    t0_ms = synthetic_rs.DEVICE_T0_MS if t0_ms is None else t0_ms
    frames = []
    last_push = -1.0
    for k in range(n):
        if paced:
            time.sleep(max(0.0, last_push + 1 / 30.0 - time.monotonic()))
            last_push = time.monotonic()
        color, depth = synthetic_rs.scene(k)
        backend.push(color, depth, t0_ms + k * 1000.0 / 30.0, domain)
        frame = source.read(0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def test_software_device_frames_come_out_aligned_rgb_and_in_millimetres(synthetic_rs):
    backend = synthetic_rs.backend(serial="test123")
    source = RealSenseSource(backend, frame_id="cam")
    info = source.open()
    try:
        assert (info.width, info.height, info.has_depth) == (64, 48, True)
        assert info.hardware_id == "test123"
        np.testing.assert_allclose(info.model.K, synthetic_rs.COLOR.K)
        assert info.model.frame_id == "cam" and info.model.distortion_model == "plumb_bob"
        frames = read_frames(synthetic_rs, source, backend, 6)
    finally:
        source.close()
    # The syncer hands out the very first colour frame alone; the source skips such sets.
    assert len(frames) >= 4 and source.incomplete_framesets >= 1
    frame = frames[-1]
    assert frame.color.shape == (48, 64, 3) and frame.color.dtype == np.uint8
    np.testing.assert_array_equal(frame.color[24, 32], (200, 10, 10 + frame.frame_number - 1))
    assert frame.depth_mm.shape == (48, 64) and frame.depth_mm.dtype == np.uint16
    assert frame.depth_mm[24, 32] == synthetic_rs.BOX_DEPTH_MM  # reprojected into colour
    assert frame.depth_mm[5, 5] == synthetic_rs.BACKGROUND_MM
    assert np.all(frame.depth_mm[20:28, 28:36] == synthetic_rs.BOX_DEPTH_MM)


def test_hardware_timestamps_are_mapped_to_host_time_keeping_intervals(synthetic_rs):
    backend = synthetic_rs.backend()
    source = RealSenseSource(backend)
    source.open()
    try:
        before = time.time()
        frames = read_frames(synthetic_rs, source, backend, 8, paced=True)
        after = time.time()
    finally:
        source.close()
    assert len(frames) >= 6
    stamps = np.array([f.stamp_s for f in frames])
    numbers = np.array([f.frame_number for f in frames])
    assert np.all((stamps > before - 1.0) & (stamps <= after))
    # Device intervals are kept, up to the scheduling jitter of this paced test.
    np.testing.assert_allclose(np.diff(stamps) / np.diff(numbers), 1 / 30.0, atol=5e-3)


def test_system_time_stamps_are_used_as_they_are(synthetic_rs):
    backend = synthetic_rs.backend()
    source = RealSenseSource(backend)
    source.open()
    try:
        t0_ms = (time.time() - 10.0) * 1000.0  # frames captured 10 s ago by the host clock
        frames = read_frames(synthetic_rs, source, backend, 4, t0_ms=t0_ms, domain="system_time")
    finally:
        source.close()
    assert len(frames) >= 2
    first = frames[0]
    assert first.stamp_s == pytest.approx(
        t0_ms / 1000.0 + (first.frame_number - 1) / 30.0, abs=1e-6
    )


def test_no_frames_within_the_timeout_reads_none(synthetic_rs):
    source = RealSenseSource(synthetic_rs.backend())
    source.open()
    try:
        t0 = time.monotonic()
        assert source.read(0.1) is None
        assert time.monotonic() - t0 < 1.0
    finally:
        source.close()


def test_a_recording_plays_back_through_the_pipeline(synthetic_rs, tmp_path):
    """Through the camera node's capture loop: librealsense's real-time playback now and then
    delivers nothing after it starts (a few opens in a hundred here, and once in CI); the
    loop's stall timeout reopens the recording, as it reopens a stalled camera."""
    from armstack_camera.capture import CaptureConfig, CaptureLoop

    path = synthetic_rs.record(tmp_path, 12)
    frames, opened = [], []
    loop = CaptureLoop(
        lambda: RealSenseSource(PipelineBackend(0, 0, 0, playback_file=str(path),
                                                loop_playback=True)),
        frames.append, CaptureConfig(stall_timeout_s=1.0, backoff_initial_s=0.1),
        on_open=opened.append)
    loop.start()
    try:
        deadline = time.monotonic() + 15.0
        while len(frames) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    info = opened[0]
    assert "rec42" in info.description and (info.width, info.height) == (64, 48)
    assert len(frames) >= 3, loop.status()
    for frame in frames:
        assert frame.depth_mm[24, 32] == synthetic_rs.BOX_DEPTH_MM
        assert frame.depth_mm[5, 5] == synthetic_rs.BACKGROUND_MM
        np.testing.assert_array_equal(frame.color[24, 32, :2], (200, 10))
        # Recordings are restamped onto the host clock, not left in the past.
        assert abs(frame.stamp_s - time.time()) < 2.0


def test_a_missing_device_is_a_source_error_at_once():
    from armstack_camera.source import SourceError

    rs = pytest.importorskip("pyrealsense2")
    if len(rs.context().query_devices()):
        pytest.skip("a RealSense is connected")
    source = RealSenseSource(PipelineBackend(640, 480, 30, serial="000000000000"))
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="no RealSense device connected"):
        source.open()
    assert time.monotonic() - t0 < 5.0  # not the pipeline's own 15 s device wait
