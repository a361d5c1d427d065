"""Small generated models for the fault tests (Isaac ROS proof-of-life habit: the right I/O,
trivial weights), and the helpers that break config files on purpose.

- `sweep_policy`: an exported-ACT-shaped policy (armstack_policy.proof_models graph and card)
  whose chunk holds every joint at the simulator's home pose except the waist, which it turns
  steadily from wherever it is: the arm visibly moves during an episode, never far.
- `tiny_detector`: an end_to_end (1, K, 6) detector with three fixed boxes named like the
  simulator's cubes; `heavy_layers` chains input-dependent MatMuls so inference is slow on
  purpose (ONNX Runtime cannot fold them away: they depend on the image).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from armstack_policy.proof_models import JOINT_NAMES, ProofSpec, write_proof_model

DETECTOR_SIZE = 320  # square network input, px
# Rows x1 y1 x2 y2 score class in the letterboxed 320 x 320 input (image centre region).
DETECTOR_ROWS = np.array([[120, 120, 140, 140, 0.9, 0],
                          [160, 130, 180, 150, 0.9, 1],
                          [190, 110, 210, 130, 0.9, 2]], np.float32)
DETECTOR_NAMES = "{0: 'red_cube', 1: 'green_cube', 2: 'blue_cube'}"
_PADDING_ROWS = 5  # zero-score rows, so the output has more rows than columns (layout guess)


def sweep_policy(directory: Path, home: tuple[float, ...], waist_rate: float) -> Path:
    """directory/policy.onnx (+ card): joint-space ACT, chunk 20 at 50 Hz, objects of the red,
    green and blue classes in its observation (so it waits for perception's frames).

    Row i of a chunk is the home pose (7,) with waist = observed waist + i * waist_rate / 50:
    played from the observation's time the waist turns at `waist_rate` rad/s."""
    spec = ProofSpec(kind="act", chunk_size=20, fps=50.0, state_names=JOINT_NAMES,
                     classes=("red", "green", "blue"), action_kind="joint")
    model = write_proof_model(directory, spec)
    proto = onnx.load(model.path)
    d = len(JOINT_NAMES)
    ws = np.zeros((d, d), np.float32)
    ws[0, 0] = 1.0  # the waist follows its observed angle; no gravity acts on it, so no drift
    ramp = np.tile(np.asarray(home, np.float32), (spec.chunk_size, 1))  # (k, D)
    ramp[:, 0] = np.arange(spec.chunk_size, dtype=np.float32) * waist_rate / spec.fps
    replace = {"Ws": ws, "We": np.zeros((spec.env_dim, d), np.float32), "ramp": ramp}
    for i, init in enumerate(proto.graph.initializer):
        if init.name in replace:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(replace[init.name],
                                                                        init.name))
    onnx.checker.check_model(proto)
    onnx.save(proto, model.path)
    return model.path


def tiny_detector(path: Path, heavy_layers: int = 0) -> Path:
    """An end_to_end detector: DETECTOR_ROWS (+ zero rows) whatever the image; each heavy layer
    is a (960, 320) x (320, 320) MatMul on the image (about 0.2 GFLOP)."""
    const = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(value, name + "_v"))
    rows = np.concatenate([DETECTOR_ROWS, np.zeros((_PADDING_ROWS, 6), np.float32)])[None]
    nodes = [const("rows", rows)]
    if heavy_layers:
        # Orthogonal, so the activations keep their size through the chain: a shrinking one
        # underflows into subnormal floats, whose arithmetic is an order of magnitude slower
        # on some CPUs (a 0.2 s frame became 2.7 s on an Intel Xeon).
        rng = np.random.default_rng(0)
        weight, _ = np.linalg.qr(rng.standard_normal((DETECTOR_SIZE, DETECTOR_SIZE)))
        nodes += [const("shape2d", np.array([3 * DETECTOR_SIZE, DETECTOR_SIZE], np.int64)),
                  const("w", weight.astype(np.float32)),
                  helper.make_node("Reshape", ["images", "shape2d"], ["h0"])]
        for i in range(heavy_layers):
            nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
        # 0 * mean(result) keeps the boxes unchanged but the work in the graph.
        nodes += [helper.make_node("ReduceMean", [f"h{heavy_layers}"], ["m"], keepdims=0),
                  const("zero", np.array(0.0, np.float32)),
                  helper.make_node("Mul", ["m", "zero"], ["nothing"]),
                  helper.make_node("Add", ["rows", "nothing"], ["output0"])]
    else:
        nodes.append(helper.make_node("Identity", ["rows"], ["output0"]))
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       [1, 3, DETECTOR_SIZE, DETECTOR_SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(rows.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    helper.set_model_props(model, {"names": DETECTOR_NAMES})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def started_pids(launch_log: str, executable: str) -> list[int]:
    """Pids of each start of `executable` (oldest first), from the launcher's
    `[INFO] [<exec>-<n>]: process started with pid [<pid>]` lines."""
    pattern = rf"\[{re.escape(executable)}-\d+\]: process started with pid \[(\d+)\]"
    return [int(pid) for pid in re.findall(pattern, launch_log)]


def config_copy(src: Path, dst: Path, rel: str, edit: dict[tuple[str, ...], object] | None = None,
                text: str | None = None) -> Path:
    """A copy of the config dir `src` at `dst` with file `rel` changed: keys at the given paths
    set to new values (parsed YAML re-dumped), or the whole file replaced by `text`."""
    import shutil

    shutil.copytree(src, dst)
    target = dst / rel
    if text is not None:
        target.write_text(text)
    else:
        data = yaml.safe_load(target.read_text())
        for keys, value in (edit or {}).items():
            node = data
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = value
        target.write_text(yaml.safe_dump(data, sort_keys=False))
    return dst
