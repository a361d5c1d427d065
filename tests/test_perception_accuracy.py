"""Perception, whole chain: simulated camera -> detector (the committed model) ->
localization, compared with the simulator's ground truth in base_link.

Objects are matched to the truth of the same camera frame (both carry the frame's stamp)
by class; over randomized scenes (sim/reset) the published positions must be within
1.0 cm (median) and 2.5 cm (95th percentile) of the true centres.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pytest

from graph import LaunchedGraph, Observer, unique_domain_id

pytest.importorskip("rclpy")
from std_srvs.srv import Trigger  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

from armstack_common import paths  # noqa: E402

SCENES = 8
MIN_OBSERVATIONS = 200


def _key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def _position(det) -> np.ndarray:
    p = det.results[0].pose.pose.position
    return np.array([p.x, p.y, p.z])


@pytest.mark.skipif(not (paths.models_dir() / "detector" / "detector.onnx").is_file(),
                    reason="models/detector/detector.onnx missing: run tools/train_detector.py")
def test_localized_positions_match_ground_truth(tmp_path):
    os.environ["ROS_DOMAIN_ID"] = str(unique_domain_id())
    link = str(tmp_path / "servo_bus")
    sim = LaunchedGraph("launch/sim.launch.yaml", "seed:=100", "camera_rate:=10.0",
                        f"servo_port_link:={link}", log_path=tmp_path / "sim.log")
    perception = LaunchedGraph("launch/perception.launch.yaml", "camera:=sim", log_path=tmp_path / "perception.log")
    obs = Observer("accuracy_test")
    truth: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    found: list[tuple[tuple[int, int], str, np.ndarray]] = []

    def on_truth(msg: Detection3DArray) -> None:
        truth[_key(msg.header)] = {d.results[0].hypothesis.class_id: _position(d) for d in msg.detections}

    def on_objects(msg: Detection3DArray) -> None:
        found.extend((_key(msg.header), d.results[0].hypothesis.class_id, _position(d)) for d in msg.detections)

    obs.node.create_subscription(Detection3DArray, "sim/ground_truth", on_truth, 50)
    obs.node.create_subscription(Detection3DArray, "objects", on_objects, 50)
    reset = obs.node.create_client(Trigger, "sim/reset")
    try:
        obs.spin_until(lambda: len(found) > 0, timeout=90.0, what="the first localized objects")
        for _ in range(SCENES):
            obs.spin_for(3.0)
            assert reset.wait_for_service(timeout_sec=10.0)
            future = reset.call_async(Trigger.Request())
            obs.spin_until(future.done, timeout=10.0, what="sim/reset")
            obs.spin_for(0.5)  # let frames of the old scene drain
    except TimeoutError:
        raise AssertionError(f"no objects; logs:\n{sim.log()[-3000:]}\n{perception.log()[-3000:]}")
    finally:
        obs.close()
        perception.stop()
        sim.stop()

    errors, per_class, unmatched, no_truth = [], defaultdict(list), 0, 0
    for key, label, position in found:
        frame_truth = truth.get(key)
        if frame_truth is None:
            no_truth += 1  # that frame's truth never reached this observer: nothing to judge
            continue
        true = frame_truth.get(label)
        if true is None:
            unmatched += 1  # a label the frame's truth lacks: a misdetection, counted below
            continue
        error = float(np.linalg.norm(position - true))
        errors.append(error)
        per_class[label].append(error)
    errors_cm = np.array(errors) * 100.0
    print(f"\n{len(errors)} object observations over {SCENES + 1} scenes, {unmatched} unmatched, "
          f"{no_truth} without the frame's truth")
    print(f"error: median {np.median(errors_cm):.2f} cm, p95 {np.percentile(errors_cm, 95):.2f} cm, "
          f"max {errors_cm.max():.2f} cm")
    for label, values in sorted(per_class.items()):
        print(f"  {label}: n={len(values)} median {np.median(values) * 100:.2f} cm")
    assert len(errors) >= MIN_OBSERVATIONS
    assert unmatched <= 0.02 * (len(errors) + unmatched), \
        "objects published with a class absent from the frame"
    assert np.median(errors_cm) <= 1.0
    assert np.percentile(errors_cm, 95) <= 2.5
