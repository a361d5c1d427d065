"""The command-line tools end to end, and torchrun DDP (subprocesses, slower than the unit tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

REPO = Path(__file__).resolve().parents[4]
TOOLS = REPO / "tools"


def _env() -> dict:
    paths = [str(REPO / "ros2_ws/src" / p) for p in ("armstack_learning", "armstack_recorder",
                                                     "armstack_policy")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths + sys.path), "OMP_NUM_THREADS": "1"}


TINY_ACT = ["--set", "chunk_size=10", "--set", "n_action_steps=10", "--set", "dim_model=32",
            "--set", "n_heads=2", "--set", "dim_feedforward=64", "--set", "n_encoder_layers=1",
            "--set", "n_vae_encoder_layers=1", "--set", "latent_dim=4"]


def test_command_line_train_then_export(tmp_path, dataset_root):
    run, model = tmp_path / "run", tmp_path / "model"
    cmd = [sys.executable, str(TOOLS / "train_policy.py"), "--policy", "act", "--dataset",
           str(dataset_root), "--steps", "3", "--out", str(run), "--batch-size", "4",
           "--log-every", "1", "--relocate-waiting", "0.5", "--episodes", "0,2", *TINY_ACT]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False,
                          timeout=150)
    assert done.returncode == 0, done.stderr
    assert "saved" in done.stderr and "step 3:" in done.stderr
    ckpt = torch.load(run / "checkpoints" / "step_000000003.pt", weights_only=False)
    assert ckpt["train_config"]["relocation"]["probability"] == 0.5
    assert ckpt["train_config"]["episodes"] == (0, 2)
    done = subprocess.run([sys.executable, str(TOOLS / "export_policy.py"), "--run", str(run),
                           "--out", str(model)], env=_env(), capture_output=True, text=True,
                          check=False, timeout=150)
    assert done.returncode == 0, done.stderr
    card = json.loads((model / "model_card.json").read_text())
    assert card["policy"]["config"]["dim_model"] == 32 and card["parity"]["passed"]
    assert card["dataset"]["episode_index"] == [0, 2]
    assert "2 episodes (episodes 0,2 of the dataset)" in (model / "MODEL_CARD.md").read_text()
    bad = subprocess.run(cmd[:-len(TINY_ACT)] + ["--episodes", "0-x"], env=_env(),
                         capture_output=True, text=True, check=False, timeout=150)
    assert bad.returncode == 2 and "'0-x' is not an index or a range" in bad.stderr


@pytest.mark.torchrun
def test_torchrun_two_processes_gloo(tmp_path, dataset_root):
    """Two CPU ranks with the gloo backend: both step, DDP keeps the weights identical (the
    trainer's end-of-run checksum comparison), only rank 0 writes."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TOOLS / "train_policy.py"), "--policy", "act", "--dataset", str(dataset_root),
           "--steps", "4", "--save-every", "2", "--out", str(run), "--batch-size", "4",
           "--log-every", "2", "--set", "dropout=0.1", *TINY_ACT]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False,
                          timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    for rank in (0, 1):
        assert f"rank {rank} finished at step 4 (16 samples this run)" in out
        assert f"rank {rank}: replicas in sync" in out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_000000002.pt", "step_000000004.pt"]
    ckpt = torch.load(run / "checkpoints" / "step_000000004.pt", weights_only=False)
    assert len(ckpt["rng"]) == 2  # each rank's RNG state, for an exact resume
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    log = (run / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [2, 4]  # rank 0 alone logs


def test_dataset_ee_actions_is_the_forward_kinematics_of_the_joint_actions(tmp_path,
                                                                           dataset_root):
    """tools/dataset_ee_actions.py: the copy's actions are FK(joint action) + gripper, qw >= 0;
    observations, timestamps and tasks are the source's; it validates and an ee layout takes it."""
    import numpy as np
    from armstack_common.kinematics import ArmKinematics
    from armstack_common.paths import urdf_path
    from armstack_recorder.lerobot_dataset import LeRobotDatasetReader
    from armstack_recorder.validate import validate_dataset

    out = tmp_path / "ee"
    done = subprocess.run([sys.executable, str(TOOLS / "dataset_ee_actions.py"),
                           str(dataset_root), str(out)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    src, ee = LeRobotDatasetReader(dataset_root), LeRobotDatasetReader(out)
    assert ee.num_episodes == src.num_episodes and ee.tasks == src.tasks
    kin = ArmKinematics(urdf_path())
    names = list(src.features["action"]["names"])
    for ep in range(src.num_episodes):
        a, b = src.episode_data(ep), ee.episode_data(ep)
        for key in ("observation.state", "observation.environment_state", "timestamp"):
            np.testing.assert_array_equal(np.stack(b[key]), np.stack(a[key]))
        joints, poses = np.stack(a["action"]), np.stack(b["action"])
        for k in (0, len(joints) // 2, len(joints) - 1):
            m = kin.fk(joints[k][[names.index(n) for n in kin.joint_names]].astype(float))
            np.testing.assert_allclose(poses[k, :3], m[:3, 3], atol=1e-6)
            assert poses[k, 6] >= 0.0 and abs(np.linalg.norm(poses[k, 3:7]) - 1) < 1e-5
            assert poses[k, 7] == joints[k][names.index("left_finger")]
    assert validate_dataset(out).ok
    again = subprocess.run([sys.executable, str(TOOLS / "dataset_ee_actions.py"),
                            str(dataset_root), str(out)], env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr


def test_open_loop_waiting_gain_is_how_far_the_chunk_follows_a_cube():
    """A chunk that moves 0.3 m per m of green's x and ignores red: gains 0.3 and 0."""
    import argparse
    from types import SimpleNamespace

    import numpy as np

    sys.path.insert(0, str(TOOLS))
    try:
        from policy_open_loop import waiting_gains
    finally:
        sys.path.remove(str(TOOLS))

    class FollowsGreen:
        card = SimpleNamespace(n_obs_steps=1)

        def predict_chunk(self, obs):
            env = obs["observation.environment_state"][-1]
            chunk = np.zeros((10, 8), np.float32)
            chunk[:, 0] = 0.3 * env[4]  # x follows green_cube_x
            return chunk

    fields = ("x", "y", "z", "present")
    env = np.tile(np.array([0.2, 0.1, 0.015, 1, 0.3, -0.1, 0.015, 1, 0.25, 0.0, 0.015, 1],
                           np.float32), (5, 1))
    state = np.zeros((5, 7), np.float32)
    policy = FollowsGreen()
    chunk = policy.predict_chunk({"observation.environment_state": env[:1]})
    args = argparse.Namespace(waiting_shift=0.05, horizon=10)
    gains = waiting_gains(policy, chunk, state, env, 2, np.array([0, 1]), fields, (0, 1), args)
    assert gains == pytest.approx([0.0, 0.3], abs=1e-5)


def test_open_loop_grasp_frames_are_where_the_gripper_action_closes():
    sys.path.insert(0, str(TOOLS))
    try:
        from policy_open_loop import grasp_frames
    finally:
        sys.path.remove(str(TOOLS))
    import numpy as np

    gripper = np.array([0.034, 0.034, 0.02, 0.0, 0.0, 0.034, 0.034, 0.010, 0.0, 0.034])
    assert grasp_frames(gripper) == [3, 7]  # below half of 0..0.034, from above


def test_bench_training_step_times_both_dropouts():
    base = [sys.executable, str(TOOLS / "bench_training_step.py"), "--policy", "act", "--steps",
            "2", "--batch-size", "4", *TINY_ACT, "--set", "dropout=0.1"]
    for extra, expect in (([], "layers.Dropout"), (["--torch-dropout"], "nn.Dropout (")):
        done = subprocess.run(base + extra, env=_env(), capture_output=True, text=True,
                              check=False, timeout=150)
        assert done.returncode == 0, done.stderr
        assert expect in done.stdout and "step ms: median" in done.stdout
    # The swap found the policy's dropouts (a rename would leave it timing nothing different).
    assert "nn.Dropout (0 modules)" not in done.stdout
