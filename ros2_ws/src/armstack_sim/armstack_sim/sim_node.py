"""ROS 2 node of the simulator: stands in for the RGB-D camera and the servo bus.

Like a Gazebo plugin, it publishes what a real camera driver publishes (rgb8 colour,
16UC1 aligned depth in mm, camera_info, the camera's pose on tf_static) on the same
topic names as armstack_camera, and exposes the arm as Dynamixel servos on a
pseudo-terminal that the real driver opens like /dev/ttyUSB0. The physics loop and the
camera each run in their own thread, so neither waits for ROS callbacks. For evaluation it
also publishes the task's progress from its ground truth on `sim/task_status` (10 Hz): which
objects rest in the bin, the scene's episode index and seed (a policy never reads it). All
logic is in world.py, runtime.py and dynamixel_bus.py, parameters and diagnostics statuses in
node_config.py; this file only wires ROS.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

from armstack_common import paths
from armstack_common.node_main import run_node
from armstack_common.diagnostics import DiagnosticReport, Level, to_msg
from armstack_common.params import NodeParameters
from armstack_common.servo_config import load_servo_config
from armstack_common.stats import RateMeter, RollingStats
from armstack_common.timeutil import sec_to_stamp_fields
from armstack_common.transforms import matrix_to_quat_xyzw
from armstack_interfaces.msg import TaskStatus
from armstack_sim.dynamixel_bus import DynamixelBusEmulator, EmulatorOptions
from armstack_sim.node_config import PARAMS, SimReportLimits, camera_report, physics_report
from armstack_sim.runtime import RuntimeConfig, SimRuntime
from armstack_sim.world import CameraCalibration, SimConfig, SimWorld


def _stamp(t: float):
    from builtin_interfaces.msg import Time

    sec, nanosec = sec_to_stamp_fields(t)
    return Time(sec=sec, nanosec=nanosec)


def camera_info_msg(calib: CameraCalibration) -> CameraInfo:
    info = CameraInfo(width=calib.width, height=calib.height, distortion_model="plumb_bob")
    info.header.frame_id = calib.frame_id
    info.d = [float(x) for x in calib.distortion] or [0.0] * 5
    info.k = [float(x) for x in calib.k.ravel()]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [calib.fx, 0.0, calib.cx, 0.0, 0.0, calib.fy, calib.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def image_msg(array: np.ndarray, encoding: str, frame_id: str, stamp) -> Image:
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


def pose_to_transform(pose: np.ndarray, parent: str, child: str, stamp) -> TransformStamped:
    tf = TransformStamped()
    tf.header.frame_id, tf.child_frame_id, tf.header.stamp = parent, child, stamp
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = map(float, pose[:3, 3])
    q = matrix_to_quat_xyzw(pose[:3, :3])
    tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z, tf.transform.rotation.w = map(float, q)
    return tf


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")
        # The validator checks the diagnostics thresholds at start and on every live update;
        # the next report reads the accepted ones from self.params.config.
        self.params = NodeParameters(self, PARAMS, SimReportLimits.from_params)
        p = self.params.values
        self.world = SimWorld(SimConfig(cube_colors=tuple(p["objects"]),
                                        workspace_x=tuple(p["workspace_x"]),
                                        workspace_y=tuple(p["workspace_y"])))
        seed = p["seed"] if p["seed"] >= 0 else int(time.time())
        self._episode, self._seed = 0, seed
        self.world.reset(seed)
        servo_config = load_servo_config(paths.config_file("robot/dynamixel.yaml"), paths.urdf_path())
        self.bus = DynamixelBusEmulator(
            servo_config,
            EmulatorOptions(wire_timing=p["wire_timing"], link_path=p["servo_port_link"] or None),
        ).start()
        self.runtime = SimRuntime(
            self.world, self.bus, servo_config, RuntimeConfig(real_time_factor=p["real_time_factor"])
        )
        self.calib = self.world.camera_intrinsics
        self._info = camera_info_msg(self.calib)

        # Reliable with depth 1, as realsense2_camera publishes: best-effort readers still
        # match, and a reliable reader gets every frame (best effort over Fast DDS loses most
        # fragmented 640x480 frames between processes: ~5 Hz of 30 measured here).
        camera_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_color = self.create_publisher(Image, "camera/color/image_raw", camera_qos)
        self.pub_color_info = self.create_publisher(CameraInfo, "camera/color/camera_info", camera_qos)
        self.pub_depth = self.create_publisher(
            Image, "camera/aligned_depth_to_color/image_raw", camera_qos
        )
        self.pub_depth_info = self.create_publisher(
            CameraInfo, "camera/aligned_depth_to_color/camera_info", camera_qos
        )
        self.pub_truth = self.create_publisher(Detection3DArray, "sim/ground_truth", 10)
        self.pub_ee_truth = self.create_publisher(PoseStamped, "sim/ee_pose", 10)
        latched = QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
        )
        self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", latched)
        self.pub_port = self.create_publisher(String, "sim/servo_port", latched)
        self.pub_diag = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.pub_task = self.create_publisher(TaskStatus, "sim/task_status", 10)
        self.create_service(Trigger, "sim/reset", self._on_reset)

        self.pub_port.publish(String(data=self.bus.port_path))
        now = _stamp(time.time())
        self.pub_tf_static.publish(TFMessage(transforms=[
            pose_to_transform(self.calib.pose, self.calib.parent_frame, self.calib.frame_id, now)
        ]))
        self.get_logger().info(f"servo bus on {self.bus.port_path} ({servo_config.baudrate} baud)")

        self.render_ms = RollingStats(300)
        self.frames = RateMeter(300)
        self._physics = threading.Thread(target=self.runtime.run_realtime, name="physics", daemon=True)
        self._camera = threading.Thread(target=self._camera_loop, name="camera", daemon=True)
        self._running = True
        self._physics.start()
        self._camera.start()
        self._diag_window = (time.monotonic(), self.runtime.steps)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(1.0 / p["task_status_rate"], self._publish_task_status)

    # ------------------------------------------------------------------ camera
    def _camera_loop(self) -> None:
        # Rendering owns its GL context, so it stays in this one thread.
        period = 1.0 / self.params.values["camera_rate"]
        next_due = time.monotonic()
        # Ctrl-C shuts the ROS context down before main() can stop this thread: stop
        # publishing as soon as the context is gone instead of raising into a dead one.
        while self._running and self.context.ok():
            data, taken = self.runtime.snapshot()
            if self.params.values["camera_paused"]:
                self._publish_truth(_stamp(taken))
            else:
                t0 = time.perf_counter()
                rgb, depth_m = self.world.render_rgbd(data)
                self.render_ms.add((time.perf_counter() - t0) * 1e3)
                self._publish_frame(rgb, depth_m, taken)
                self.frames.tick(taken)
            period = 1.0 / self.params.values["camera_rate"]
            next_due = max(next_due + period, time.monotonic())
            time.sleep(max(0.0, next_due - time.monotonic()))
        # The GL context is current in this thread only, so it is freed here.
        self.world.close()

    def _publish_frame(self, rgb: np.ndarray, depth_m: np.ndarray, taken: float) -> None:
        # A frame is stamped with the instant its physics state was captured, like a
        # camera driver stamping exposure time, not publish time.
        stamp = _stamp(taken)
        frame = self.calib.frame_id
        depth_mm = np.clip(np.rint(depth_m * 1000.0), 0, 65535).astype(np.uint16)
        depth_mm[~np.isfinite(depth_m)] = 0
        self._info.header.stamp = stamp
        self.pub_color.publish(image_msg(rgb, "rgb8", frame, stamp))
        self.pub_color_info.publish(self._info)
        self.pub_depth.publish(image_msg(depth_mm, "16UC1", frame, stamp))
        self.pub_depth_info.publish(self._info)
        self._publish_truth(stamp)

    def _publish_truth(self, stamp) -> None:
        if self.params.values["publish_ground_truth"]:
            self.pub_truth.publish(self._ground_truth(stamp))
            self.pub_ee_truth.publish(self._ee_truth(stamp))

    def _ground_truth(self, stamp) -> Detection3DArray:
        array = Detection3DArray()
        array.header.stamp, array.header.frame_id = stamp, "base_link"
        with self.runtime.lock:
            poses = self.world.object_poses()
        for obj in poses:
            det = Detection3D(id=obj.name)
            det.header = array.header
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id, hyp.hypothesis.score = obj.name, 1.0
            hyp.pose.pose.position.x, hyp.pose.pose.position.y, hyp.pose.pose.position.z = map(float, obj.position)
            o = hyp.pose.pose.orientation
            o.x, o.y, o.z, o.w = map(float, obj.quat_xyzw)
            det.results.append(hyp)
            det.bbox.center = hyp.pose.pose
            det.bbox.size.x = det.bbox.size.y = det.bbox.size.z = float(obj.size)
            array.detections.append(det)
        return array

    def _ee_truth(self, stamp) -> PoseStamped:
        with self.runtime.lock:
            pose = self.world.ee_pose()
        msg = PoseStamped()
        msg.header.stamp, msg.header.frame_id = stamp, "base_link"
        p, o = msg.pose.position, msg.pose.orientation
        p.x, p.y, p.z = map(float, pose[:3, 3])
        o.x, o.y, o.z, o.w = map(float, matrix_to_quat_xyzw(pose[:3, :3]))
        return msg

    def _publish_task_status(self) -> None:
        msg = TaskStatus(episode=self._episode, seed=self._seed)
        with self.runtime.lock:
            names = self.world.object_names
            msg.in_bin = [self.world.object_in_bin(name) for name in names]
            msg.sim_time = self.world.time
            msg.header.stamp = _stamp(time.time())
        msg.object_names = list(names)
        msg.success = all(msg.in_bin)
        self.pub_task.publish(msg)

    # ------------------------------------------------------------------ services, diagnostics
    def _on_reset(self, _request, response):
        # The reset and the task status run in the one executor thread: a status never mixes
        # the new scene with the old episode index.
        self._episode, self._seed = self._episode + 1, self._seed + 1
        self.runtime.reset(self._seed)
        response.success = True
        response.message = f"episode {self._episode} reset with seed {self._seed}"
        return response

    def _publish_diagnostics(self) -> None:
        t_prev, steps_prev = self._diag_window
        now = time.monotonic()
        rtf = self.runtime.real_time_ratio(now - t_prev, steps_prev)
        self._diag_window = (now, self.runtime.steps)
        limits: SimReportLimits = self.params.config
        physics = physics_report(rtf, self.runtime.config.real_time_factor,
                                 self.runtime.step_time_us.summary(), limits)
        camera = camera_report(self.calib.frame_id, self.frames.rate_hz(), self.render_ms.summary(),
                               self.params.values["camera_paused"], limits)
        bus = DiagnosticReport("sim: servo bus", hardware_id=self.bus.port_path)
        stats = self.bus.stats
        bus.add("packets", stats.packets)
        bus.add("crc_errors", stats.crc_errors)
        if stats.crc_errors:
            bus.raise_to(Level.WARN, f"{stats.crc_errors} packets with bad CRC received")
        self.pub_diag.publish(to_msg([physics, camera, bus], self.get_clock().now().to_msg()))

    def shutdown(self) -> None:
        self._running = False
        self.runtime.stop()
        self._physics.join(timeout=2.0)
        self._camera.join(timeout=2.0)
        self.bus.stop()


def main(argv: list[str] | None = None) -> int:
    # The bus emulator answers from a Python thread; with the default 5 ms GIL switch
    # interval the physics and camera threads would delay servo replies by milliseconds.
    sys.setswitchinterval(0.0005)
    return run_node("sim", SimNode, args=argv, release=SimNode.shutdown)


if __name__ == "__main__":
    sys.exit(main())
