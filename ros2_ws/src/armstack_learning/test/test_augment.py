"""Moving the cubes a sample's actions ignore: which cubes wait, where they go, and the
training samples that carry them (a dataset written by the recorder's writer)."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_learning.augment import (
    RelocationConfig,
    relocate_slots,
    table_region,
    waiting_slots,
)
from armstack_learning.features import JOINT_NAMES, ObjectSlotsConfig, layout_for_dataset
from armstack_recorder.lerobot_dataset import FeatureSpec, LeRobotDatasetWriter, WriterConfig
from armstack_recorder.metadata import read_info

FIELDS = ("x", "y", "z", "present")
BIN = (0.13, -0.31)
OPEN, CLOSED = 0.034, 0.0
RED, GREEN, BLUE = 0, 1, 2
CUBES = {RED: (0.20, 0.10), GREEN: (0.30, -0.05), BLUE: (0.25, 0.15)}


def pick_episode(order=(BLUE, GREEN, RED), frames=360, grasp_at=(60, 160, 260), hold=30,
                 missed=()) -> tuple[np.ndarray, np.ndarray]:
    """(env (T, 12), gripper (T,)): each pick closes at grasp_at[j], releases `hold` frames
    later, and its cube is in the bin 5 frames after that (unless the pick is `missed`); the
    cube a pick handles is hidden (present 0) from its grasp until 40 frames after the
    release, as the arm hides it."""
    env = np.zeros((frames, 3, 4), np.float32)
    for slot, (x, y) in CUBES.items():
        env[:, slot] = (x, y, 0.015, 1.0)
    gripper = np.full(frames, OPEN, np.float32)
    for j, (slot, grasp) in enumerate(zip(order, grasp_at, strict=True)):
        release = grasp + hold
        gripper[grasp:release] = CLOSED
        if j in missed:
            continue
        env[release + 5:, slot, :2] = BIN
        env[grasp:release + 40, slot] = 0.0
    return env.reshape(frames, -1), gripper


def releases(grasp_at=(60, 160, 260), hold=30):
    return [g + hold for g in grasp_at]


def test_a_cube_waits_until_the_chunk_reaches_its_pick():
    env, gripper = pick_episode()
    horizon = 20
    waiting = waiting_slots(env, gripper, np.zeros(len(env), int), FIELDS, horizon)
    r0, r1, _ = releases()  # blue's pick ends at r0, green's at r1
    # t's chunk ends at t + 19: still in blue's pick up to r0 - 19, in green's after that
    assert waiting[0].tolist() == [True, True, False]
    assert waiting[r0 - horizon + 1].tolist() == [True, True, False]
    assert waiting[r0 - horizon + 2].tolist() == [True, False, False]
    assert waiting[r1 - horizon + 1].tolist() == [True, False, False]
    assert waiting[r1 - horizon + 2].tolist() == [False, False, False]
    assert not waiting[r1 + 1:].any()


def test_episodes_are_apart_and_a_missed_pick_says_nothing():
    first, g1 = pick_episode()
    second, g2 = pick_episode(order=(RED, GREEN, BLUE), missed=(0,))
    env, gripper = np.concatenate([first, second]), np.concatenate([g1, g2])
    episode = np.repeat([0, 1], len(first))
    waiting = waiting_slots(env, gripper, episode, FIELDS, 10)
    assert waiting[0].tolist() == [True, True, False]
    # episode 1: red's pick moved nothing, so red is nobody's; blue waits for green's pick
    assert waiting[len(first)].tolist() == [False, True, True]
    assert waiting[len(first) + releases()[0] + 1].tolist() == [False, False, True]


def test_moved_cubes_land_on_free_table_and_nothing_else_changes():
    env, _ = pick_episode()
    rows = env[:2]  # a two-step observation history
    region = (0.15, 0.35, -0.2, 0.2)
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = relocate_slots(rows, [RED, GREEN], FIELDS, region, 0.06, rng.random((32, 2)))
        slots, before = out.reshape(2, 3, 4), rows.reshape(2, 3, 4)
        np.testing.assert_array_equal(slots[0], slots[1])  # the same move in every row
        np.testing.assert_array_equal(slots[:, BLUE], before[:, BLUE])
        np.testing.assert_array_equal(slots[:, :, 2:], before[:, :, 2:])  # z and present
        xy = slots[-1, :, :2]
        assert np.all((xy[:2, 0] >= 0.15) & (xy[:2, 0] <= 0.35))
        assert np.all((xy[:2, 1] >= -0.2) & (xy[:2, 1] <= 0.2))
        for a, b in ((RED, GREEN), (RED, BLUE), (GREEN, BLUE)):
            assert np.hypot(*(xy[a] - xy[b])) >= 0.06
    assert not np.shares_memory(out, rows)


def test_a_cube_not_seen_or_without_room_stays():
    env, _ = pick_episode()
    rows = env[:1].copy()
    rows[0, 4 * RED + 3] = 0.0  # red not seen
    out = relocate_slots(rows, [RED], FIELDS, (0.15, 0.35, -0.2, 0.2), 0.06, np.full((8, 2), 0.5))
    np.testing.assert_array_equal(out, rows)
    # every candidate is on top of blue
    u = np.tile([(0.25 - 0.15) / 0.2, (0.15 + 0.2) / 0.4], (8, 1))
    out = relocate_slots(env[:1], [GREEN], FIELDS, (0.15, 0.35, -0.2, 0.2), 0.06, u)
    np.testing.assert_array_equal(out, env[:1])


def test_the_table_region_is_where_the_first_frames_put_cubes():
    first, _ = pick_episode()
    second = first.copy()
    second[:, 0] = 0.33
    env = np.concatenate([first, second])
    region = table_region(env, np.repeat([0, 1], len(first)), FIELDS)
    assert region == pytest.approx((0.20, 0.33, -0.05, 0.15))


@pytest.mark.parametrize("kwargs, field", [
    ({"probability": 1.5}, "probability"),
    ({"min_separation": 0.0}, "min_separation"),
    ({"settle_frames": 0}, "settle_frames"),
])
def test_relocation_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"RelocationConfig.{field}"):
        RelocationConfig(**kwargs)


def test_slots_without_positions_cannot_move():
    with pytest.raises(ValueError, match="x, y and present"):
        waiting_slots(np.zeros((4, 2)), np.zeros(4), np.zeros(4, int), ("x", "present"), 2)


@pytest.fixture(scope="module")
def pick_dataset(tmp_path_factory):
    """Two recorded pick episodes, joint actions whose gripper (left_finger) is the command."""
    objects = ObjectSlotsConfig()
    spec = FeatureSpec(state_names=list(JOINT_NAMES), action_names=list(JOINT_NAMES),
                       env_state_names=objects.names)
    root = tmp_path_factory.mktemp("picks") / "data"
    cfg = WriterConfig(root=root, fps=50, robot_type="armstack_wx250s", features=spec)
    with LeRobotDatasetWriter(cfg) as writer:
        for order in ((BLUE, GREEN, RED), (RED, BLUE, GREEN)):
            env, gripper = pick_episode(order=order)
            writer.start_episode("put the cubes in the bin")
            for k in range(len(env)):
                joints = np.r_[np.full(6, k / len(env)), gripper[k]].astype(np.float32)
                writer.add_frame(joints, joints, env[k])
            writer.save_episode()
    layout = layout_for_dataset(read_info(root)["features"], objects, "joint")
    return root, layout


def test_training_samples_move_only_the_waiting_cubes(pick_dataset):
    import torch
    from armstack_learning.data import ChunkDataset, WindowConfig

    root, layout = pick_dataset
    window = WindowConfig(chunk_size=20)
    plain = ChunkDataset(root, layout, window)
    moved = ChunkDataset(root, layout, window, relocation=RelocationConfig(probability=1.0))
    torch.manual_seed(0)
    second = 360  # episode 1 picks red, blue, green: blue and green wait at its start
    for t, still in ((0, [BLUE]), (second, [RED])):
        a, b = plain[t], moved[t]
        torch.testing.assert_close(a["action"], b["action"])
        torch.testing.assert_close(a["observation.state"], b["observation.state"])
        env_a = a["observation.environment_state"].reshape(-1, 3, 4)
        env_b = b["observation.environment_state"].reshape(-1, 3, 4)
        for slot in range(3):
            same = torch.equal(env_a[:, slot], env_b[:, slot])
            assert same == (slot in still), (t, slot)
    last = moved[len(moved) - 1]  # every pick done: nothing waits
    torch.testing.assert_close(last["observation.environment_state"],
                               plain[len(plain) - 1]["observation.environment_state"])


def test_a_vla_refuses_relocation(pick_dataset):
    from armstack_learning.factory import make_dataset
    from armstack_learning.vla import VLAConfig

    root, layout = pick_dataset
    with pytest.raises(ValueError, match="not the camera images"):
        make_dataset(VLAConfig(), root, layout, RelocationConfig(probability=0.5))
