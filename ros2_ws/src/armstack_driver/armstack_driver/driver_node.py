"""driver_node: the arm's Dynamixel bus in ROS 2 (joint_states out, joint_command in).

Lifecycle (style.md #6): configure acquires the bus (open, find and set up every servo, start
the loop: joint_states flow with the torque off), activate enables motion (torque on, holding
where the arm is), deactivate disables it, cleanup releases the bus. With `autostart` (default)
the node configures and activates itself, retrying while the port or a servo is missing.

Topics (relative): joint_states (sensor_msgs/JointState: the 7 driven joints + right_finger,
stamped when the sync read completed; effort is motor current in A), joint_command in
(sensor_msgs/JointState, names -> positions, header.stamp = the originating camera frame's),
driver/latency (std_msgs/Float64: seconds from a command's header stamp to its write on the bus,
one sample per command; rqt_plot shows /driver/latency/data), diagnostics.
Services: driver/estop and driver/enable (std_srvs/Trigger).

The logic is in bus.py, safety.py and loop.py; this file only wires ROS.
"""

from __future__ import annotations

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64
from std_srvs.srv import Trigger

from armstack_common import paths
from armstack_common.node_main import run_node
from armstack_common.diagnostics import to_msg
from armstack_common.params import NodeParameters
from armstack_common.servo_config import load_servo_config
from armstack_common.timeutil import sec_to_stamp_fields, stamp_to_sec
from armstack_driver.bus import BusError, DynamixelBus, latency_timer_warning
from armstack_driver.config import PARAMS, DriverConfig
from armstack_driver.joint_state import JointStateLayout, urdf_mimic_joints
from armstack_driver.loop import DriverLoop, JointSample
from armstack_driver.reports import DriverReporter
from armstack_driver.safety import JointLimits, MotionSupervisor, check_command

# s, how soon a diagnostics message the loop asks for (a fault, a stop) goes out
DIAGNOSTICS_REQUEST_POLL_S = 0.05


class DriverNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("driver")
        self.params = NodeParameters(self, PARAMS, DriverConfig.from_params, self._on_params)
        self.config: DriverConfig = self.params.config
        urdf = paths.urdf_path()
        self.servo = load_servo_config(self.config.servo_config_path(), urdf)
        self.port = self.config.port or self.servo.port
        self.layout = JointStateLayout(self.servo.joint_names, urdf_mimic_joints(urdf))
        self.limits = JointLimits.from_servo_config(self.servo, ignored=self.layout.mimic_names)
        self.reporter = DriverReporter(self.get_name(), self.port, self.config)
        self.bus: DynamixelBus | None = None
        self.loop: DriverLoop | None = None

        self._state_pub = self.create_publisher(JointState, "joint_states", 10)
        self._latency_pub = self.create_publisher(Float64, "driver/latency", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(JointState, "joint_command", self._on_command, 10)
        self.create_service(Trigger, "driver/estop", self._on_estop)
        self.create_service(Trigger, "driver/enable", self._on_enable)
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)
        # The loop thread asks for an immediate diagnostics message by setting an event that a
        # short timer answers, so every report is built in the executor thread. (Not a guard
        # condition: Jazzy's EventsExecutor, armstack_common.executors, does not take them.)
        self._diag_now = threading.Event()
        self.create_timer(DIAGNOSTICS_REQUEST_POLL_S, self._answer_diagnostics_request)
        # Autostart keeps trying until motion is enabled once (the port may appear later, a
        # servo may be powered later); a deliberate deactivate is not undone.
        self._autostart_pending = self.config.autostart
        if self.config.autostart and self.config.configure_retry_s > 0:
            self.create_timer(self.config.configure_retry_s, self._retry_start)

    # ----------------------------------------------------------------------------- lifecycle
    def lifecycle_label(self) -> str:
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        bus = DynamixelBus(self.servo, self.port, self.config.bus_options())
        try:
            bus.connect()
            notes = bus.configure()
        except BusError as exc:
            bus.disconnect()
            self.reporter.setup_error = str(exc)
            self.get_logger().error(f"configure failed, motion stays disabled: {exc}")
            return TransitionCallbackReturn.FAILURE
        warning = latency_timer_warning(self.port)
        notes += [warning] if warning else []
        for note in notes:
            self.get_logger().warning(note)
        self.reporter.setup_error, self.reporter.setup_notes = "", notes
        self.bus = bus
        supervisor = MotionSupervisor(self.limits, self.config.safety())
        self.loop = DriverLoop(bus, supervisor, self.config.loop(), self._publish_state,
                               self._publish_latency, self._diag_now.set)
        self.loop.start()
        self.get_logger().info(f"configured: {len(self.servo.joints)} servos on {self.port} at "
                               f"{self.servo.baudrate} baud, loop at {self.config.rate_hz:g} Hz")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ok, message = self.loop.request("enable")
        self.reporter.enable_error = "" if ok else message
        if not ok:
            self.get_logger().error(message)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(message)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ok, message = self.loop.request("disable")
        if ok:  # one severity per call site: rclpy raises on a second one
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)
        return super().on_deactivate(state)

    def release(self) -> None:
        """Stop the loop and close the port (torque off first when configured)."""
        if self.loop is not None:
            self.loop.stop()
            self.loop = None
        if self.bus is not None:
            if self.config.torque_off_on_shutdown and self.bus.is_connected:
                failed = self.bus.disable_torque()
                if failed:
                    self.get_logger().error(f"torque off not confirmed: {failed}")
            self.bus.disconnect()
            self.bus = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_shutdown(state)

    def start(self) -> bool:
        """Configure (if needed) and activate; True when motion is enabled."""
        if (self.lifecycle_label() == "unconfigured"
                and self.trigger_configure() != TransitionCallbackReturn.SUCCESS):
            return False
        if self.lifecycle_label() == "inactive":
            self.trigger_activate()
        active = self.lifecycle_label() == "active"
        self._autostart_pending &= not active
        return active

    def _retry_start(self) -> None:
        if self._autostart_pending:
            self.start()

    # --------------------------------------------------------------------------- callbacks
    def _on_params(self, values: dict) -> None:
        self.config = self.params.config
        if self.loop is not None:
            self.loop.supervisor.config = self.config.safety()
            self.loop.update_config(self.config.loop())
        self.reporter.config = self.config  # rate and thresholds of the next report

    def _on_command(self, msg: JointState) -> None:
        received = time.monotonic()
        check = check_command(msg.name, msg.position, self.limits, self.config.safety())
        if not check.ok:
            self.reporter.rejections.add(check.error)
            self.get_logger().warning(f"joint_command rejected: {check.error}", throttle_duration_sec=1.0)
            return
        if self.loop is not None:
            stamp = stamp_to_sec(msg.header.stamp)
            self.loop.post_command(check, received, stamp if stamp > 0 else None)

    def _on_estop(self, _request, response):
        if self.loop is None:
            response.success, response.message = True, "e-stop: driver not configured, nothing moves"
        else:
            response.success, response.message = self.loop.request("estop", timeout=1.0)
        self.get_logger().warning(response.message)
        return response

    def _on_enable(self, _request, response):
        if self.lifecycle_label() != "active":
            ok = self.start()
            why = self.reporter.setup_error or self.reporter.enable_error
            message = "motion enabled" if ok else f"enable failed: {why}"
        else:
            ok, message = self.loop.request("enable", timeout=5.0)
            self.reporter.enable_error = "" if ok else message
        response.success, response.message = ok, message
        return response

    # -------------------------------------------------------------------------- publishing
    def _publish_state(self, sample: JointSample) -> None:
        """Called from the loop thread (rclpy publishers are thread-safe)."""
        msg = JointState(name=self.layout.names)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec_to_stamp_fields(sample.stamp)
        msg.position = self.layout.positions(sample.positions).tolist()
        msg.velocity = self.layout.rates(sample.velocities).tolist()
        msg.effort = self.layout.rates(sample.efforts).tolist()
        self._state_pub.publish(msg)

    def _publish_latency(self, seconds: float) -> None:
        self._latency_pub.publish(Float64(data=seconds))

    def _answer_diagnostics_request(self) -> None:
        if self._diag_now.is_set():
            self._diag_now.clear()
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        status = self.loop.status() if self.loop is not None else None
        reports = self.reporter.reports(status)
        self._diag_pub.publish(to_msg(reports, self.get_clock().now().to_msg()))


def _autostart(node: DriverNode) -> bool:
    if node.config.autostart:
        node.start()
    return True


def main(args: list[str] | None = None) -> int:
    # The loop thread shares the GIL with the executor; a short switch interval keeps a ROS
    # callback from delaying a bus cycle by the default 5 ms.
    sys.setswitchinterval(0.0005)
    # Repeated signals are ignored (armstack_common.shutdown): nothing cuts release() (torque
    # off) short, and the context stays up while the loop's publishers run.
    return run_node("driver", DriverNode, args=args, start=_autostart, release=DriverNode.release)


if __name__ == "__main__":
    sys.exit(main())
