"""teleop node: a person (keyboard, gamepad, leader arm) or the simulator's scripted expert
drives the arm through the topics the policy drives, and the session's episodes are
controlled by keys, buttons and services.

Publishes `ee_command` (keyboard, gamepad, expert) or `joint_command` (leader arm) at `rate`,
`teleop/episode` (armstack_interfaces/EpisodeStatus, latched) on every change of the episode
state, and `diagnostics`. Subscribes `joint_states` (the expert also `sim/ground_truth` and
optionally `sim/ee_pose`, and calls `sim/reset` between takes; with recorder_confirms also
`recorder/episode_report`). Services (std_srvs/Trigger):
teleop/start_episode, teleop/save_episode, teleop/discard_episode, teleop/end_session.
The logic is in the plain modules of this package; this file wires ROS.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from armstack_common.node_main import run_node
from armstack_interfaces.msg import EndEffectorCommand
from armstack_interfaces.msg import EpisodeStatus as EpisodeStatusMsg
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from armstack_common import paths
from armstack_common.diagnostics import DiagnosticReport, Level, to_msg
from armstack_common.kinematics import ArmKinematics, IKConfig
from armstack_common.params import NodeParameters
from armstack_common.servo_config import load_default_servo_config, load_servo_config
from armstack_common.stats import RateMeter
from armstack_teleop import ros_conv
from armstack_teleop.episode import (EpisodeController, EpisodeStatus, Event, State, Transition,
                                     recorder_verdict_of)
from armstack_teleop.jog import EETarget
from armstack_teleop.keyboard import HELP, KeyboardTeleop, TerminalKeys
from armstack_teleop.node_config import TELEOP_PARAMS, TeleopConfig, teleop_config
from armstack_teleop.sources import GamepadSource, LeaderSource, TickResult

_QOS_DEPTH = 10
_GRIPPER_JOINT = "left_finger"
_LINGER_AFTER_END = 1.0  # s the finished state stays published before the node exits
_STALE_JOINT_STATES = 1.0  # s without joint_states before diagnostics warn


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop")
        self._params = NodeParameters(self, TELEOP_PARAMS, validate=teleop_config, on_update=self._on_update)
        cfg: TeleopConfig = self._params.config
        self.cfg = cfg
        self.done = False  # main() stops spinning when set
        self._exit_at: float | None = None
        self._episodes = EpisodeController(cfg.task, cfg.source, cfg.num_episodes, self.now(),
                                           confirm_saves=cfg.recorder_confirms)
        # FK only: no start table for IK restarts.
        self._kin = ArmKinematics(paths.urdf_path(), IKConfig(start_table_size=0))
        self._joints: dict[str, float] = {}
        self._joints_stamp = float("-inf")
        self._last_tick: float | None = None
        self._commands = RateMeter(200)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self._status_pub = self.create_publisher(EpisodeStatusMsg, "teleop/episode", latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", _QOS_DEPTH)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, _QOS_DEPTH)
        for name, event in (("start_episode", Event.START), ("save_episode", Event.SAVE),
                            ("discard_episode", Event.DISCARD), ("end_session", Event.END)):
            self.create_service(Trigger, f"teleop/{name}", lambda _req, res, e=event: self._on_service(e, res))
        if cfg.recorder_confirms:
            # latched as the recorder publishes them; replayed reports of takes this session
            # did not save are ignored
            reports = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                 reliability=ReliabilityPolicy.RELIABLE)
            self.create_subscription(String, "recorder/episode_report", self._on_recorder_report,
                                     reports)

        self._target = EETarget(cfg.jog) if cfg.source in ("keyboard", "gamepad") else None
        self._gamepad: GamepadSource | None = None
        self._leader: LeaderSource | None = None
        self._expert = None
        self._setup_source(cfg)
        self._keyboard = KeyboardTeleop(cfg.keyboard, self._target if cfg.source == "keyboard" else None)
        self._terminal = self._open_terminal(cfg)
        self.create_timer(1.0 / cfg.rate, self._tick)
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        self._publish_status()
        self.get_logger().info(f"teleop ready: source {cfg.source}, task {cfg.task!r}; "
                               f"{self._episodes.status.summary}")

    def _setup_source(self, cfg: TeleopConfig) -> None:
        if cfg.source == "leader":
            self._cmd_pub = self.create_publisher(JointState, "joint_command", _QOS_DEPTH)
            leader_file = Path(cfg.leader_config)
            if not leader_file.is_absolute():
                leader_file = paths.config_file(cfg.leader_config)
            self._leader = LeaderSource(load_servo_config(leader_file, paths.urdf_path()),
                                        load_default_servo_config(), cfg.leader, cfg.device_retry_period,
                                        cfg.leader_port)
            return
        self._cmd_pub = self.create_publisher(EndEffectorCommand, "ee_command", _QOS_DEPTH)
        if cfg.source == "gamepad":
            self._gamepad = GamepadSource(cfg.gamepad, self._target, cfg.device_retry_period,
                                          device_path=cfg.gamepad_device)
        elif cfg.source == "expert":
            # Imported here: the expert pulls in the simulator (MuJoCo).
            from armstack_teleop.expert_io import ExpertSource

            self._expert = ExpertSource(self, cfg)

    def _open_terminal(self, cfg: TeleopConfig) -> TerminalKeys | None:
        if cfg.source != "keyboard" and not cfg.keyboard_episode_keys:
            return None
        if not sys.stdin.isatty():
            if cfg.source == "keyboard":
                self.get_logger().warning("stdin is not a terminal: no keyboard input; run the node in a "
                                          "terminal (ros2 run) or use the teleop/* services")
            return None
        terminal = TerminalKeys(sys.stdin.fileno())
        terminal.open()
        self.get_logger().info(HELP)
        return terminal

    def _on_update(self, _values: dict) -> None:
        cfg: TeleopConfig = self._params.config
        self.cfg = cfg
        if cfg.task != self._episodes.status.task:
            self._episodes.set_task(cfg.task)
            self._publish_status()
        self._keyboard.config = cfg.keyboard
        if self._target is not None:
            self._target.config = cfg.jog
        if self._gamepad is not None:
            mapping = self._gamepad.mapping
            mapping.config, mapping.gripper_open, mapping.gripper_closed = (
                cfg.gamepad, cfg.jog.gripper_open, cfg.jog.gripper_closed)

    # ------------------------------------------------------------------ inputs
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_states(self, msg: JointState) -> None:
        self._joints.update(ros_conv.joint_positions(msg))
        self._joints_stamp = ros_conv.stamp_seconds(msg.header)

    def measured_ee(self) -> tuple[np.ndarray, float, float] | None:
        """(ee pose (4, 4) by FK, gripper opening, stamp) from joint_states; None before them."""
        try:
            q = np.array([self._joints[name] for name in self._kin.joint_names])  # (6,)
            gripper = self._joints[_GRIPPER_JOINT]
        except KeyError:
            return None
        return self._kin.fk(q).copy(), gripper, self._joints_stamp

    def _joint_values(self, names: list[str]) -> np.ndarray | None:
        """Measured positions of `names` (J,), or None until each has been reported."""
        if not all(name in self._joints for name in names):
            return None
        return np.array([self._joints[name] for name in names])

    def _on_service(self, event: Event, response):
        transition = self.apply_event(event, "service")
        response.success, response.message = transition.accepted, transition.message
        return response

    # ------------------------------------------------------------------ episodes
    @property
    def episode_status(self) -> EpisodeStatus:
        return self._episodes.status

    def apply_event(self, event: Event, origin: str) -> Transition:
        transition = self._episodes.apply(event, self.now())
        if not transition.accepted:
            self.get_logger().warning(f"[{origin}] {event.value} refused: {transition.message}")
            return transition
        self.get_logger().info(f"[{origin}] {transition.message}")
        self._status_changed()
        return transition

    def _on_recorder_report(self, msg: String) -> None:
        try:
            verdict = recorder_verdict_of(msg.data)
        except ValueError as exc:
            self.get_logger().warning(str(exc))
            return
        line = None if verdict is None else self._episodes.recorder_verdict(*verdict, self.now())
        if line is None:
            return
        if verdict[1]:
            self.get_logger().info(f"[recorder] {line}")
        else:
            self.get_logger().warning(f"[recorder] {line}")
        self._status_changed()

    def _status_changed(self) -> None:
        self._publish_status()
        if self._episodes.state is State.FINISHED and self.cfg.exit_on_end and self._exit_at is None:
            self._exit_at = self.now() + _LINGER_AFTER_END

    def _publish_status(self) -> None:
        self._status_pub.publish(ros_conv.status_msg(self._episodes.status))

    # ------------------------------------------------------------------ control tick
    def _tick(self) -> None:
        now = self.now()
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 0.1)
        self._last_tick = now
        if self._exit_at is not None and now >= self._exit_at:
            self.done = True
            return
        self._read_terminal()
        if self._leader is not None:
            self._tick_leader(now, dt)
        elif self._expert is not None:
            self._expert.tick(now)
        else:
            self._tick_jog(now, dt)

    def _read_terminal(self) -> None:
        if self._terminal is None:
            return
        for key in self._terminal.read_keys():
            result = self._keyboard.handle(key, self._episodes.state)
            if result.message:
                self.get_logger().info(result.message)
            if result.event is Event.END and self._episodes.state is State.FINISHED:
                self.done = True  # ending an ended session: leave now
            elif result.event is not None:
                self.apply_event(result.event, "key")

    def _tick_jog(self, now: float, dt: float) -> None:
        measured = self.measured_ee()
        if measured is not None:
            pose, gripper, _ = measured
            if not self._target.synced:
                self._target.sync(pose, gripper)
            self._target.observe(pose)
        if self._gamepad is not None:
            arm = None if measured is None else measured[:2]
            self._handle(self._gamepad.tick(now, dt, self._episodes.state, arm), "gamepad")
        if not self._target.synced:
            return
        # The device is sampled at this tick: that is the command's observation time.
        self._cmd_pub.publish(ros_conv.ee_command_msg(self._target.pose, self._target.gripper,
                                                      ros_conv.time_msg(now), self.cfg.base_frame))
        self._commands.tick(now)

    def _tick_leader(self, now: float, dt: float) -> None:
        positions, result = self._leader.tick(now, dt, self._joint_values(self._leader.joint_names))
        self._handle(result, "leader")
        if positions is not None:
            stamp = ros_conv.time_msg(now)  # the leader was read at this tick
            self._cmd_pub.publish(ros_conv.joint_command_msg(self._leader.joint_names, positions, stamp))
            self._commands.tick(now)

    def _handle(self, result: TickResult, origin: str) -> None:
        for note in result.notes:
            self.get_logger().info(f"[{origin}] {note}")
        for warning in result.warnings:
            self.get_logger().warning(f"[{origin}] {warning}")
        for event in result.events:
            self.apply_event(event, origin)

    def publish_ee(self, pose: np.ndarray, gripper: float, stamp: Time) -> None:
        """An ee_command stamped with its observation's stamp (expert source)."""
        self._cmd_pub.publish(ros_conv.ee_command_msg(pose, gripper, stamp, self.cfg.base_frame))
        self._commands.tick(self.now())

    # ------------------------------------------------------------------ diagnostics, shutdown
    def _publish_diagnostics(self) -> None:
        now = self.now()
        report = DiagnosticReport(f"{self.get_name()}: teleop", hardware_id=self.cfg.source)
        report.add("episode", self._episodes.status.summary)
        report.add("command_rate_hz", self._commands.rate_hz())
        if self._leader is None and now - self._joints_stamp > _STALE_JOINT_STATES:
            report.raise_to(Level.WARN, "no recent joint_states")
        if self.cfg.source == "keyboard" and self._terminal is None:
            report.raise_to(Level.WARN, "no keyboard: stdin is not a terminal")
        for source in (self._gamepad, self._leader):
            if source is not None and source.device.error:
                report.raise_to(Level.ERROR, source.device.error)
        if self._expert is not None:
            self._expert.report(report)
        self._diag_pub.publish(to_msg([report], self.get_clock().now().to_msg()))

    def shutdown(self) -> None:
        if self._terminal is not None:
            self._terminal.close()
        for source in (self._gamepad, self._leader):
            if source is not None:
                source.close()


def main(args: list[str] | None = None) -> int:
    # The plain modules (e.g. the expert's grasp retries) log through Python logging.
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    return run_node("teleop", TeleopNode, args=args, release=TeleopNode.shutdown,
                    done=lambda node: node.done)


if __name__ == "__main__":
    sys.exit(main())
