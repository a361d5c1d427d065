"""In-process evaluation: real MuJoCo, real detector and localization, a proof-of-life policy."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_common.paths import resolve_model
from armstack_eval.inprocess import InProcessEvalConfig, InProcessEvaluator, Perception
from armstack_eval.trace import EpisodeTrace
from armstack_policy.observation import ObservationAssembler
from armstack_policy.onnx_policy import RunnerConfig, load_policy
from armstack_policy.proof_models import ProofSpec, write_proof_model
from armstack_sim.world import SimWorld

DETECTOR = "detector/detector.onnx"


@pytest.fixture(scope="module")
def world():
    w = SimWorld()
    yield w
    w.close()


def test_perception_places_every_cube_near_its_true_centre(world):
    perception = Perception(world, resolve_model(DETECTOR, "tools/train_detector.py"))
    world.reset(7)
    for _ in range(4):  # the tracker confirms an object after min_hits frames
        objects = perception.objects()
    truth = {p.name: p.position for p in world.object_poses()}
    assert sorted(o.label for o in objects) == sorted(truth)
    for o in objects:
        assert np.linalg.norm(np.asarray(o.position) - truth[o.label]) < 0.01


@pytest.mark.parametrize("objects", ["perception", "ground_truth"])
def test_an_episode_runs_the_policy_at_the_inference_period(tmp_path, world, objects):
    proof = write_proof_model(tmp_path, ProofSpec(kind="act", chunk_size=20, slope=0.0))
    policy = load_policy(proof.path, RunnerConfig(intra_op_threads=1))
    cfg = InProcessEvalConfig(episodes=1, time_limit=0.6, objects=objects, inference_period=3)
    evaluator = InProcessEvaluator(policy, cfg, resolve_model(DETECTOR, "tools/train_detector.py"),
                                   world=world)
    outcome = evaluator.run(0)
    steps = round(0.6 / policy.card.dt)
    assert outcome.inferences == -(-steps // 3)  # one chunk every third step, from step 0
    assert outcome.dry_steps == 0
    assert not outcome.success and not any(outcome.in_bin.values())
    assert outcome.sim_time == pytest.approx(0.6, abs=policy.card.dt)


def test_receding_horizon_infers_once_per_n_action_steps(tmp_path, world):
    proof = write_proof_model(tmp_path, ProofSpec(kind="act", chunk_size=20, slope=0.0))
    policy = load_policy(proof.path, RunnerConfig(intra_op_threads=1))
    cfg = InProcessEvalConfig(episodes=1, time_limit=0.6, objects="ground_truth",
                              mode="receding_horizon", n_action_steps=10)
    trace = EpisodeTrace(world.object_names)
    outcome = InProcessEvaluator(policy, cfg, world=world).run(0, trace)
    assert outcome.inferences == 3  # steps 0, 10, 20 of 30
    # The trace has every control step: its time, the true ee and cube positions.
    table = trace.table
    np.testing.assert_allclose(table[:, 0], np.arange(30) * policy.card.dt)
    np.testing.assert_allclose(table[-1, 5:], np.ravel([o.position for o in world.object_poses()]),
                               atol=1e-3)
    assert np.all(np.isfinite(table[:, 4]))  # a gripper command at every step
    world.reset(cfg.seed)  # the outcome names the layout the episode started from
    assert outcome.layout == {o.name: pytest.approx(tuple(o.position[:2]), abs=1e-4)
                              for o in world.object_poses()}


def test_the_tool_evaluates_on_a_strip_of_the_workspace(tmp_path):
    """tools/eval_policy_inprocess.py --workspace-x: every episode's cubes start in the strip,
    and the JSON has each episode's layout."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    proof = write_proof_model(tmp_path, ProofSpec(kind="act", chunk_size=20, slope=0.0))
    tool = Path(__file__).resolve().parents[4] / "tools" / "eval_policy_inprocess.py"
    out = tmp_path / "eval.json"
    command = [sys.executable, str(tool), "--model", str(proof.path), "--episodes", "2",
               "--time-limit", "0.2", "--objects", "ground_truth", "--json", str(out)]
    run = subprocess.run([*command, "--workspace-x", "0.30", "0.35"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    episodes = json.loads(out.read_text())["episodes"]
    assert len(episodes) == 2
    for episode in episodes:
        assert all(0.30 <= x <= 0.35 for x, _ in episode["layout"].values()), episode
    assert "cubes at the start" in run.stdout  # each failed episode shows its layout
    traced = subprocess.run([*command, "--episodes", "1", "--trace-dir", str(tmp_path / "traces")],
                            capture_output=True, text=True, timeout=120)
    assert traced.returncode == 0, traced.stderr
    assert len(EpisodeTrace.load(tmp_path / "traces" / "episode_100000.npz")) == 10  # 0.2 s
    reversed_ = subprocess.run([*command, "--workspace-x", "0.35", "0.30"], capture_output=True,
                               text=True, timeout=120)
    assert reversed_.returncode == 2 and "workspace_x" in reversed_.stderr


def test_the_tool_sets_a_diffusion_policys_ddim_steps_and_samples(tmp_path):
    """--num-inference-steps overrides the card's DDIM steps, --diffusion-samples sets the
    chunks sampled per observation; the JSON records both."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    proof = write_proof_model(tmp_path, ProofSpec(kind="diffusion", n_obs_steps=1, chunk_size=8,
                                                  num_inference_steps=10))
    tool = Path(__file__).resolve().parents[4] / "tools" / "eval_policy_inprocess.py"
    out = tmp_path / "eval.json"
    command = [sys.executable, str(tool), "--model", str(proof.path), "--episodes", "1",
               "--time-limit", "0.1", "--objects", "ground_truth", "--json", str(out)]
    run = subprocess.run([*command, "--num-inference-steps", "3", "--diffusion-samples", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["num_inference_steps"] == 3 and summary["diffusion_samples"] == 2
    bad = subprocess.run([*command, "--num-inference-steps", "-1"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "num_inference_steps" in bad.stderr


@pytest.mark.parametrize(("overrides", "field"), [
    ({"episodes": 0}, "episodes"), ({"objects": "oracle"}, "objects"),
    ({"mode": "fastest"}, "mode"), ({"time_limit": 0.0}, "time_limit"),
    ({"n_action_steps": -1}, "n_action_steps"), ({"lead_in": 0.0}, "lead_in"),
    ({"start_positions": (0.0, float("nan"))}, "start_positions")])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"InProcessEvalConfig.{field} "):
        InProcessEvalConfig(**overrides)


def test_joint_targets_map_joint_actions_by_name_and_ee_actions_through_the_ik_node(world):
    from armstack_common.kinematics import ArmKinematics
    from armstack_common.paths import urdf_path
    from armstack_common.robot_names import EE_ACTION_NAMES
    from armstack_common.transforms import matrix_to_quat_xyzw
    from armstack_eval.inprocess import JointTargets
    from armstack_policy.actions import ActionLayout

    names = world.joint_names
    previous = np.arange(len(names), dtype=float) * 0.1
    by_name = JointTargets(ActionLayout("joint", [names[2], names[0]]), names)
    by_name.reset(previous)
    targets, ok = by_name(np.array([0.7, -0.3]), previous, 0.0)
    expected = previous.copy()
    expected[2], expected[0] = 0.7, -0.3
    assert ok and np.array_equal(targets, expected)
    with pytest.raises(ValueError, match="not joints"):
        JointTargets(ActionLayout("joint", ["elbow", "tail"]), names)

    kin = ArmKinematics(urdf_path())
    q = np.array([0.2, -0.4, 0.5, 0.1, 0.6, -0.2])
    m = kin.fk(q)
    action = np.array([*m[:3, 3], *matrix_to_quat_xyzw(m[:3, :3]), 0.02])
    through_ik = JointTargets(ActionLayout("ee", EE_ACTION_NAMES), names)
    measured = np.append(q + 0.05, 0.01)  # near the solution: IK starts from the measured joints
    through_ik.reset(measured)
    # The IK node's motion limits move the commands towards the solution a bounded step at a
    # time (config/ik.yaml), so the first command is near the measured joints.
    first, ok = through_ik(action, measured, 0.0)
    assert ok and np.allclose(first, measured, atol=1e-9)
    steps = [through_ik(action, measured, 0.02 * k)[0] for k in range(1, 150)]
    assert np.abs(np.diff(steps, axis=0)).max() < 0.05  # rad (or m) per 20 ms
    targets = steps[-1]
    assert targets[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(kin.fk(targets[:-1])[:3, 3], m[:3, 3], atol=1e-3)
    unreachable = action.copy()
    unreachable[:3] = [3.0, 0.0, 0.0]  # metres beyond the arm's reach: the arm holds
    held, ok = through_ik(unreachable, measured, 0.02 * 150)
    assert not ok and np.allclose(held, targets)


def test_an_episode_starts_after_the_lead_in_with_the_objects_already_tracked(tmp_path, world):
    """The camera and perception run while the arm reaches the start pose, as on the graph,
    so the first observation already has every cube."""
    from armstack_eval.episodes import sim_start_pose

    proof = write_proof_model(tmp_path, ProofSpec(kind="act", chunk_size=20, slope=0.0))
    policy = load_policy(proof.path, RunnerConfig(intra_op_threads=1))
    start = sim_start_pose()["start_positions"]
    cfg = InProcessEvalConfig(episodes=1, time_limit=0.1, objects="perception",
                              start_positions=start)
    evaluator = InProcessEvaluator(policy, cfg, resolve_model(DETECTOR, "tools/train_detector.py"),
                                   world=world)
    seen = []
    add_objects = ObservationAssembler.add_objects

    def spy(self, stamp, objects):
        seen.append(sorted(o.label for o in objects))
        return add_objects(self, stamp, objects)

    ObservationAssembler.add_objects = spy
    try:
        outcome = evaluator.run(0)
    finally:
        ObservationAssembler.add_objects = add_objects
    assert seen[0] == sorted(world.object_names)
    np.testing.assert_allclose(world.joint_positions()[:-1], start[:-1], atol=0.05)
    assert outcome.sim_time == pytest.approx(0.1, abs=policy.card.dt)


def test_start_at_miss_hands_over_with_the_gripper_closed_beside_a_cube(tmp_path, world):
    """The expert misses the seed's cube on purpose; the episode clock starts there, so the
    policy begins where a grasp of its own went wrong: closed, low, a miss offset from it."""
    from armstack_common.kinematics import ArmKinematics
    from armstack_common.paths import urdf_path
    from armstack_eval.episodes import sim_start_pose
    from armstack_eval.inprocess import teleop_expert_config

    proof = write_proof_model(tmp_path, ProofSpec(kind="act", chunk_size=20, slope=0.0))
    policy = load_policy(proof.path, RunnerConfig(intra_op_threads=1))
    cfg = InProcessEvalConfig(episodes=1, seed=11, time_limit=0.04, objects="ground_truth",
                              start_positions=sim_start_pose()["start_positions"],
                              start_at_miss=True)
    outcome = InProcessEvaluator(policy, cfg, world=world).run(0)
    names = sorted(world.object_names)
    assert outcome.missed_before == names[int(np.random.default_rng(11).integers(len(names)))]
    assert outcome.sim_time == pytest.approx(0.04, abs=policy.card.dt)  # clock after the miss
    q = world.joint_positions()
    ee = ArmKinematics(urdf_path()).fk(q[:-1])[:3, 3]
    cube = world.object_pose(outcome.missed_before).position
    offset = np.linalg.norm(ee[:2] - cube[:2])
    miss = teleop_expert_config().miss_offset
    assert q[-1] < 0.01 and ee[2] < 0.05  # the fingers closed, down at the cube
    assert miss - 0.01 < offset < miss + 0.01
