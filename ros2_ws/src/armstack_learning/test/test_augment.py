"""Moving the cubes a sample's actions ignore: which cubes wait, where they go, and the
training samples that carry them (a dataset written by the recorder's writer); turning reaches
about the arm's base: which samples may turn, and the turned samples."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_common.robot_names import EE_ACTION_NAMES
from armstack_learning.augment import (
    BASE_JOINT,
    BaseRotationConfig,
    RelocationConfig,
    carrying_frames,
    relocate_slots,
    rotate_about_base,
    rotation_safe,
    table_region,
    untouched_slots,
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


def write_picks(root, kind: str, episode) -> tuple:
    """Two recorded pick episodes (blue, green, red; red, blue, green) of `episode(order)` ->
    (state, env, action) frames, with `kind` ("joint" or "ee") actions; (root, layout)."""
    objects = ObjectSlotsConfig()
    actions = JOINT_NAMES if kind == "joint" else EE_ACTION_NAMES
    spec = FeatureSpec(state_names=list(JOINT_NAMES), action_names=list(actions),
                       env_state_names=objects.names)
    cfg = WriterConfig(root=root, fps=50, robot_type="armstack_wx250s", features=spec)
    with LeRobotDatasetWriter(cfg) as writer:
        for order in ((BLUE, GREEN, RED), (RED, BLUE, GREEN)):
            writer.start_episode("put the cubes in the bin")
            for state, env, action in zip(*episode(order), strict=True):
                writer.add_frame(state, action, env)
            writer.save_episode()
    return root, layout_for_dataset(read_info(root)["features"], objects, kind)


def joint_pick_episode(order) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state, env, action) of pick_episode with joint actions equal to the state, whose
    gripper (left_finger) is the command."""
    env, gripper = pick_episode(order=order)
    k = np.arange(len(env))[:, None]
    joints = np.column_stack([np.repeat(k / len(env), 6, axis=1), gripper]).astype(np.float32)
    return joints, env, joints


@pytest.fixture(scope="module")
def pick_dataset(tmp_path_factory):
    return write_picks(tmp_path_factory.mktemp("picks") / "data", "joint", joint_pick_episode)


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


# ---------------------------------------------------------------- turning reaches about the base

EE_Z = 0.05
DOWN = np.array([0.0, 0.7071068, 0.0, 0.7071068])  # x y z w: the gripper pointing down


def ee_pick_episode(order=(BLUE, GREEN, RED), grasp_at=(60, 160, 260), hold=30, settle=10
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(state (T, 7), env (T, 12), ee actions (T, 8)) of pick_episode: each pick's commands
    wait above its cube until `settle` frames after the close, then move in a line to the bin,
    arriving at the release, and wait there until the next pick; the waist reads the azimuth
    of the commanded position."""
    env, gripper = pick_episode(order=order, grasp_at=grasp_at, hold=hold)
    xy = np.zeros((len(env), 2))
    start = 0
    for slot, grasp in zip(order, grasp_at, strict=True):
        release = grasp + hold
        xy[start:grasp + settle] = CUBES[slot]
        s = np.linspace(0.0, 1.0, release - grasp - settle)[:, None]
        xy[grasp + settle:release] = (1 - s) * np.array(CUBES[slot]) + s * np.array(BIN)
        xy[release:] = BIN
        start = release
    actions = np.column_stack([xy, np.full(len(env), EE_Z), np.tile(DOWN, (len(env), 1)),
                               gripper]).astype(np.float32)
    state = np.zeros((len(env), 7), np.float32)
    state[:, 0] = np.arctan2(xy[:, 1], xy[:, 0])
    state[:, 6] = gripper
    return state, env, actions


def test_the_base_joint_turns_the_ee_about_base_z_so_a_turned_sample_is_the_arm_s_own_pose():
    from armstack_common.kinematics import ArmKinematics
    from armstack_common.paths import urdf_path
    from armstack_common.transforms import matrix_to_quat_xyzw

    kin = ArmKinematics(urdf_path())
    assert JOINT_NAMES.index(BASE_JOINT) == 0
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.uniform(-0.8, 0.8, 6)
        angle = float(rng.uniform(-0.5, 0.5))
        pose = kin.fk(q)
        action = np.r_[pose[:3, 3], matrix_to_quat_xyzw(pose[:3, :3]), 0.02][None]
        state = np.r_[q, 0.02][None].astype(np.float32)
        turned_state, _, turned = rotate_about_base(
            angle, state, None, action, base_joint=0, slots=(), fields=FIELDS, position=(0, 1),
            quaternion=(3, 4, 5, 6))
        truth = kin.fk(turned_state[0, :6].astype(np.float64))  # the arm at the turned reading
        np.testing.assert_allclose(turned[0, :3], truth[:3, 3], atol=1e-5)  # float32
        np.testing.assert_allclose(turned[0, 3:7], matrix_to_quat_xyzw(truth[:3, :3]), atol=1e-5)
        assert turned[0, 7] == np.float32(action[0, 7])


def test_a_frame_carries_once_the_closed_gripper_has_moved():
    _, _, actions = ee_pick_episode(settle=10)
    episode = np.zeros(len(actions), int)
    carrying = carrying_frames(actions[:, :2], actions[:, 7], episode, tolerance=0.02)
    grasp, release = 60, 90
    assert not carrying[:grasp + 11].any()  # the reach, the close and the wait at the cube
    assert carrying[grasp + 13:release].all()  # on the way to the bin (first step ~1 cm)
    assert not carrying[release:160].any()  # let go: the gripper is open again
    # A new episode that starts closed counts its travel from its own first frame.
    two = np.r_[np.zeros(release), np.ones(len(actions) - release)].astype(int)
    assert not carrying_frames(actions[:, :2], actions[:, 7], two, 0.02)[release:160].any()


def test_a_sample_is_safe_to_turn_when_its_chunk_carries_nothing():
    carrying = np.zeros(30, bool)
    carrying[10:14] = True
    episode = np.r_[np.zeros(20, int), np.ones(10, int)]
    safe = rotation_safe(carrying, episode, horizon=5)
    assert safe[:6].all() and not safe[6:14].any() and safe[14:].all()
    carrying[25] = True  # the second episode: its chunks are clipped at its end
    assert rotation_safe(carrying, episode, 5)[20:].tolist() == [True] + [False] * 5 + [True] * 4


def test_a_cube_is_untouched_until_it_leaves_the_spot_it_was_first_seen_at():
    env, _ = pick_episode()  # blue, green, red: grasp 60, release 90 (blue in the bin at 95)
    untouched = untouched_slots(env, np.zeros(len(env), int), FIELDS)
    assert untouched[:60].all()
    assert untouched[70].tolist() == [True, True, False]  # blue hidden by the arm
    assert untouched[140].tolist() == [True, True, False]  # blue in the bin
    assert not untouched[-1].any()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"probability": 1.5}, "probability"),
    ({"max_angle_deg": 0.0}, "max_angle_deg"),
    ({"max_angle_deg": 90.0}, "max_angle_deg"),
    ({"carry_tolerance": 0.0}, "carry_tolerance"),
])
def test_base_rotation_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"BaseRotationConfig.{field}"):
        BaseRotationConfig(**kwargs)


@pytest.fixture(scope="module")
def ee_pick_dataset(tmp_path_factory):
    return write_picks(tmp_path_factory.mktemp("ee_picks") / "data", "ee", ee_pick_episode)


def test_training_samples_turn_their_reach_but_not_the_bin(ee_pick_dataset):
    import torch
    from armstack_learning.data import ChunkDataset, WindowConfig

    root, layout = ee_pick_dataset
    window = WindowConfig(chunk_size=20)
    plain = ChunkDataset(root, layout, window)
    turned = ChunkDataset(root, layout, window,
                          rotation=BaseRotationConfig(probability=1.0, max_angle_deg=20.0))
    torch.manual_seed(0)
    # 30: reaching for blue; 130: after blue is in the bin, reaching for green; 75: carrying
    for t, still in ((30, ()), (130, (BLUE,)), (75, (RED, GREEN, BLUE))):
        a, b = plain[t], turned[t]
        if len(still) == 3:
            for key in a:
                torch.testing.assert_close(a[key], b[key])
            continue
        angle = float(b["observation.state"][0, 0] - a["observation.state"][0, 0])
        assert 0.0 < abs(angle) <= np.radians(20.0)
        torch.testing.assert_close(a["observation.state"][:, 1:], b["observation.state"][:, 1:])
        xy_a, xy_b = a["action"][:, :2].numpy(), b["action"][:, :2].numpy()
        np.testing.assert_allclose(np.linalg.norm(xy_b, axis=1), np.linalg.norm(xy_a, axis=1),
                                   atol=1e-6)
        np.testing.assert_allclose(np.arctan2(xy_b[:, 1], xy_b[:, 0]),
                                   np.arctan2(xy_a[:, 1], xy_a[:, 0]) + angle, atol=1e-5)
        torch.testing.assert_close(a["action"][:, 2], b["action"][:, 2])  # height
        torch.testing.assert_close(a["action"][:, 7], b["action"][:, 7])  # gripper
        env_a = a["observation.environment_state"].reshape(-1, 3, 4).numpy()
        env_b = b["observation.environment_state"].reshape(-1, 3, 4).numpy()
        for slot in range(3):
            if slot in still:
                np.testing.assert_array_equal(env_a[:, slot], env_b[:, slot])
            else:
                np.testing.assert_allclose(
                    np.arctan2(env_b[:, slot, 1], env_b[:, slot, 0]),
                    np.arctan2(env_a[:, slot, 1], env_a[:, slot, 0]) + angle, atol=1e-5)
                np.testing.assert_array_equal(env_a[:, slot, 2:], env_b[:, slot, 2:])


def test_turning_needs_ee_actions_and_is_refused_to_a_vla(pick_dataset, ee_pick_dataset):
    from armstack_learning.data import ChunkDataset, WindowConfig
    from armstack_learning.factory import make_dataset
    from armstack_learning.vla import VLAConfig

    root, layout = pick_dataset  # joint actions
    with pytest.raises(ValueError, match="needs end-effector actions"):
        ChunkDataset(root, layout, WindowConfig(chunk_size=20),
                     rotation=BaseRotationConfig(probability=0.5))
    root, layout = ee_pick_dataset
    with pytest.raises(ValueError, match="not the camera images"):
        make_dataset(VLAConfig(), root, layout, rotation=BaseRotationConfig(probability=0.5))
