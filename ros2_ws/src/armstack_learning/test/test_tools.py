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
           "--log-every", "1", *TINY_ACT]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False,
                          timeout=150)
    assert done.returncode == 0, done.stderr
    assert "saved" in done.stderr and "step 3:" in done.stderr
    done = subprocess.run([sys.executable, str(TOOLS / "export_policy.py"), "--run", str(run),
                           "--out", str(model)], env=_env(), capture_output=True, text=True,
                          check=False, timeout=150)
    assert done.returncode == 0, done.stderr
    card = json.loads((model / "model_card.json").read_text())
    assert card["policy"]["config"]["dim_model"] == 32 and card["parity"]["passed"]
    assert (model / "policy.onnx").is_file() and (model / "MODEL_CARD.md").is_file()


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
