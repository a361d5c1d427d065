"""QoS profiles the perception nodes share (rclpy-facing; used by node files only)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from armstack_camera.config import IMAGE_QOS_CHOICES


def image_qos(choice: str) -> QoSProfile:
    """Images and their camera_info: only the newest frame matters, so keep one.

    "reliable" (default, see config.DEFAULT_IMAGE_QOS); "sensor_data" is best effort, to subscribe
    to best-effort publishers (a reliable reader does not match them) or over lossy links.
    A reliable writer serves both kinds of readers.
    """
    if choice not in IMAGE_QOS_CHOICES:
        raise ValueError(f"qos must be 'sensor_data' or 'reliable', got '{choice}'")
    reliability = (
        ReliabilityPolicy.BEST_EFFORT if choice == "sensor_data" else ReliabilityPolicy.RELIABLE
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


# Results (detections, objects): small, each one wanted; reliable with a short queue.
RESULTS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

# tf2_ros's own profiles (geometry2 tf2_ros/qos.hpp): listeners keep 100, tf_static is
# transient local so late joiners get the static tree; the static broadcaster keeps 1.
TF_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
TF_STATIC_LISTENER_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
TF_STATIC_BROADCASTER_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
