#!/usr/bin/env python3
"""Copy a joint-space dataset with its actions turned into end-effector actions.

Each frame's joint-space action (the joint_command the IK node sent) becomes the ee_link pose
the forward kinematics of the URDF gives for it: x y z (m, base_link), qx qy qz qw (qw >= 0)
and gripper (m, left_finger), the layout an end-effector policy commands (`--action-kind ee`
in tools/train_policy.py; its ee_command goes through the IK node). Since the recorded joint
commands are IK solutions of the teleoperator's ee commands, this recovers those commands
without re-recording. Observations (joint state, objects) are copied as they are; camera
videos are not copied (the output is for policies that take the objects, not images).

    python tools/dataset_ee_actions.py /tmp/expert50 /tmp/expert50_ee
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
for _pkg in ("armstack_common", "armstack_recorder", "armstack_policy", "armstack_learning"):
    sys.path.insert(0, str(_REPO / "ros2_ws" / "src" / _pkg))

from armstack_common.kinematics import ArmKinematics  # noqa: E402
from armstack_common.paths import urdf_path  # noqa: E402
from armstack_common.robot_names import EE_ACTION_NAMES  # noqa: E402
from armstack_common.transforms import matrix_to_quat_xyzw  # noqa: E402
from armstack_learning.features import canonicalize_quaternions  # noqa: E402
from armstack_recorder.lerobot_dataset import (  # noqa: E402
    FeatureSpec,
    LeRobotDatasetReader,
    LeRobotDatasetWriter,
    WriterConfig,
)

GRIPPER = "left_finger"


def ee_actions(kinematics: ArmKinematics, names: list[str], actions: np.ndarray) -> np.ndarray:
    """(N, D) joint actions named `names` -> (N, 8) x y z qx qy qz qw gripper."""
    missing = [n for n in (*kinematics.joint_names, GRIPPER) if n not in names]
    if missing:
        raise ValueError(f"the dataset's actions {names} lack {missing}")
    arm = [names.index(n) for n in kinematics.joint_names]
    out = np.empty((len(actions), len(EE_ACTION_NAMES)), dtype=np.float32)
    for i, row in enumerate(actions):
        m = kinematics.fk(np.asarray(row[arm], dtype=np.float64))
        out[i, :3], out[i, 3:7] = m[:3, 3], matrix_to_quat_xyzw(m[:3, :3])
        out[i, 7] = row[names.index(GRIPPER)]
    return canonicalize_quaternions(out, range(3, 7))  # qw >= 0, as training wants them


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="LeRobot v3.0 dataset with joint actions")
    parser.add_argument("out", type=Path, help="new dataset directory (must not exist)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new directory")
    reader = LeRobotDatasetReader(args.source)
    info = json.loads((args.source / "meta" / "info.json").read_text(encoding="utf-8"))
    features = info["features"]

    def names(key: str) -> list[str]:
        return list(features[key]["names"]) if key in features else []

    kinematics = ArmKinematics(urdf_path())
    spec = FeatureSpec(state_names=names("observation.state"), action_names=list(EE_ACTION_NAMES),
                       env_state_names=names("observation.environment_state"))
    config = WriterConfig(root=args.out, fps=int(info["fps"]), robot_type=info["robot_type"],
                          features=spec)
    joint_names = names("action")
    with LeRobotDatasetWriter(config) as writer:
        for ep in range(reader.num_episodes):
            data = reader.episode_data(ep)
            actions = ee_actions(kinematics, joint_names, np.stack(data["action"]))
            env = data.get("observation.environment_state")
            writer.start_episode(reader.tasks[int(data["task_index"][0])])
            for k in range(len(actions)):
                writer.add_frame(data["observation.state"][k], actions[k],
                                 None if env is None else env[k],
                                 timestamp=float(data["timestamp"][k]))
            writer.save_episode()
            print(f"episode {ep}: {len(actions)} frames", flush=True)
    print(f"wrote {args.out}: {reader.num_episodes} episodes with end-effector actions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
