"""state_publisher node: robot_state_publisher's job for the pip-only way (it has no wheel).

From `joint_states` it publishes every URDF joint's parent -> child link transform on
`/tf` (stamped with the joint state's stamp), the fixed joints once on `/tf_static`, and the
URDF text on `robot_description`, both transient local so late subscribers (rviz) get them.
Mimic joints (right_finger) follow their master. Where a real robot_state_publisher runs,
launch it instead of this node: the topics and QoS are the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

from armstack_common.node_main import run_node
from armstack_common.diagnostics import DiagnosticReport, Level, to_msg
from armstack_common.params import NodeParameters
from armstack_common.paths import urdf_path
from armstack_common.stats import RateMeter
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from .node_config import STATE_PUBLISHER_PARAMS, StatePublisherConfig, state_publisher_config
from .robot_model import LinkTransform, LinkTree

LATCHED = QoSProfile(
    depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
)
# tf2's broadcaster depth: bursts of joint states must not drop link poses.
_TF_DEPTH = 100


def to_transform_msg(transform: LinkTransform, stamp: Time, prefix: str) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = prefix + transform.parent
    msg.child_frame_id = prefix + transform.child
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = transform.translation.tolist()
    r.x, r.y, r.z, r.w = transform.quaternion.tolist()
    return msg


class StatePublisher(Node):
    def __init__(self) -> None:
        super().__init__("state_publisher")
        self._params = NodeParameters(self, STATE_PUBLISHER_PARAMS, validate=state_publisher_config)
        cfg: StatePublisherConfig = self._params.config
        path = Path(cfg.urdf_path) if cfg.urdf_path else urdf_path()
        text = path.read_text()
        self._tree = LinkTree(text)
        self._prefix = cfg.frame_prefix
        self._rate = RateMeter()
        self._last_publish: float | None = None
        self._missing: list[str] = []
        self._tf_pub = self.create_publisher(TFMessage, "/tf", _TF_DEPTH)
        self._static_pub = self.create_publisher(TFMessage, "/tf_static", LATCHED)
        self._description_pub = self.create_publisher(String, "robot_description", LATCHED)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self._description_pub.publish(String(data=text))
        stamp = self.get_clock().now().to_msg()
        self._static_pub.publish(
            TFMessage(
                transforms=[to_transform_msg(t, stamp, self._prefix) for t in self._tree.static_transforms()]
            )
        )
        self.create_subscription(JointState, "joint_states", self._on_joint_states, 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"publishing tf of {path} for joints {', '.join(self._tree.actuated)}")

    def _on_joint_states(self, msg: JointState) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        self._rate.tick(now)
        rate = self._params.config.max_publish_rate
        if rate > 0.0 and self._last_publish is not None and now - self._last_publish < 1.0 / rate:
            return
        if len(msg.name) != len(msg.position):
            self.get_logger().warning(
                f"joint_states ignored: {len(msg.name)} names, {len(msg.position)} positions",
                throttle_duration_sec=1.0,
            )
            return
        positions = dict(zip(msg.name, msg.position, strict=True))
        self._missing = [name for name in self._tree.actuated if name not in positions]
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:  # an unstamped state is "now"
            stamp = self.get_clock().now().to_msg()
        transforms = self._tree.transforms(positions)
        self._tf_pub.publish(
            TFMessage(transforms=[to_transform_msg(t, stamp, self._prefix) for t in transforms])
        )
        self._last_publish = now

    def _publish_diagnostics(self) -> None:
        report = DiagnosticReport(name=f"{self.get_name()}: tf")
        report.add("joint_states", self._rate.count)
        report.add("joint_states_rate_hz", self._rate.rate_hz())
        if self._rate.count == 0:
            report.raise_to(Level.WARN, "no joint_states received")
        if self._missing:
            report.raise_to(Level.WARN, f"joint_states lacks {', '.join(self._missing)}")
        self._diagnostics_pub.publish(to_msg([report], self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> int:
    return run_node("state_publisher", StatePublisher, args=args)


if __name__ == "__main__":
    sys.exit(main())
