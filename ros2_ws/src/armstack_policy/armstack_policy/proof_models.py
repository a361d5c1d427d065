"""Tiny "proof of life" policy graphs with the exported I/O and a model card (needs `onnx`).

They let the runtime, the node and the benchmark run without a trained policy (the habit of
Isaac ROS tests: a dummy ONNX with the right I/O). The graphs are small affine maps whose
output is easy to recompute with NumPy:

    ACT        action[b, i] = state[b, -1] @ Ws + env[b, -1] @ We + mean(images[b])
                              + bias + i * slope
    Diffusion  eps[b] = c_x * x_t[b] + c_t * timestep[b]
                        + mean_n(state[b]) @ Ws + mean_n(env[b]) @ We

Cards follow armstack_learning.export.build_card (format armstack-model-card/1), with the
fields the runtime reads; "dataset" and "training" say the model is synthetic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from armstack_common.robot_names import EE_ACTION_NAMES, JOINT_NAMES
from onnx import TensorProto, helper, numpy_helper

from armstack_policy.ddim import NoiseSchedule, alphas_cumprod
from armstack_policy.onnx_policy import (CARD_FILE, CARD_FORMAT, ENV_STATE_KEY, IMAGE_PREFIX,
                                         STATE_KEY)

OPSET = 17
_B11 = numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "b11")  # Reshape to (B, 1, 1)


@dataclass(frozen=True)
class ProofSpec:
    """Layout of a proof model; the weights are drawn from `seed`."""

    kind: str = "act"  # act | diffusion
    chunk_size: int = 20
    fps: float = 50.0
    n_obs_steps: int = 1
    state_names: tuple[str, ...] = JOINT_NAMES
    classes: tuple[str, ...] = ("red", "green", "blue")
    fields: tuple[str, ...] = ("x", "y", "z", "present")
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (8, 8)
    action_kind: str = "joint"  # joint | ee
    slope: float = 0.001  # ACT: per-row change of every action value
    seed: int = 0
    schedule: NoiseSchedule = field(default_factory=lambda: NoiseSchedule(num_train_timesteps=50))
    num_inference_steps: int = 5
    timestep_spacing: str = "trailing"

    @property
    def action_names(self) -> tuple[str, ...]:
        return self.state_names if self.action_kind == "joint" else EE_ACTION_NAMES

    @property
    def env_dim(self) -> int:
        return len(self.classes) * len(self.fields)


@dataclass(frozen=True)
class ProofModel:
    path: Path  # the .onnx; the card is beside it
    spec: ProofSpec
    weights: dict[str, np.ndarray]  # Ws (S, D), We (E, D), bias (D,), c_x, c_t, offset, scale

    def expected_act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """(k, D) the ACT graph's output for {feature: (n_obs, ...)}, in NumPy."""
        w, spec = self.weights, self.spec
        row = observation[STATE_KEY][-1] @ w["Ws"] + w["bias"]
        if spec.classes:
            row = row + observation[ENV_STATE_KEY][-1] @ w["We"]
        for cam in spec.cameras:
            row = row + observation[IMAGE_PREFIX + cam].mean()
        return row[None, :] + spec.slope * np.arange(spec.chunk_size)[:, None]

    def expected_eps(self, x_t: np.ndarray, t: int,
                     observation: dict[str, np.ndarray]) -> np.ndarray:
        """(k, D) the denoiser graph's output for one sample, in NumPy."""
        w = self.weights
        eps = w["c_x"] * x_t + w["c_t"] * t + observation[STATE_KEY].mean(0) @ w["Ws"]
        if self.spec.classes:
            eps = eps + observation[ENV_STATE_KEY].mean(0) @ w["We"]
        return eps


def _weights(spec: ProofSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    s, d = len(spec.state_names), len(spec.action_names)
    ws = np.eye(s, d, dtype=np.float32) if spec.action_kind == "joint" else (
        0.05 * rng.standard_normal((s, d))).astype(np.float32)
    bias = (0.01 * rng.standard_normal(d)).astype(np.float32)
    if spec.action_kind == "ee":
        bias[list(spec.action_names).index("qw")] += 1.0  # keep the quaternion away from zero
    return {
        "Ws": ws, "bias": bias,
        "We": (0.01 * rng.standard_normal((max(spec.env_dim, 1), d))).astype(np.float32),
        "c_x": np.float32(0.3), "c_t": np.float32(0.002),
        "offset": (0.1 * rng.standard_normal(d)).astype(np.float32),
        "scale": (0.5 + rng.random(d)).astype(np.float32),
    }


def _value(name: str, shape: list, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _obs_inputs(spec: ProofSpec) -> list[onnx.ValueInfoProto]:
    n = spec.n_obs_steps
    inputs = [_value(STATE_KEY, ["batch", n, len(spec.state_names)])]
    if spec.classes:
        inputs.append(_value(ENV_STATE_KEY, ["batch", n, spec.env_dim]))
    inputs += [_value(IMAGE_PREFIX + c, ["batch", n, 3, *spec.image_size]) for c in spec.cameras]
    return inputs


def _obs_terms(spec: ProofSpec, w: dict, reduce: str) -> tuple[list, list, list[str]]:
    """Nodes and initializers adding the observation terms; reduce "last" or "mean" over n_obs."""
    nodes, inits, terms = [], [numpy_helper.from_array(w["Ws"], "Ws")], []
    features = [(STATE_KEY, "Ws")] + ([(ENV_STATE_KEY, "We")] if spec.classes else [])
    if spec.classes:
        inits.append(numpy_helper.from_array(w["We"], "We"))
    for i, (key, weight) in enumerate(features):
        if reduce == "last":
            inits.append(numpy_helper.from_array(np.array([-1], np.int64), f"last{i}"))
            inits.append(numpy_helper.from_array(np.array([2**62], np.int64), f"end{i}"))
            inits.append(numpy_helper.from_array(np.array([1], np.int64), f"axis{i}"))
            nodes.append(helper.make_node("Slice", [key, f"last{i}", f"end{i}", f"axis{i}"],
                                          [f"sel{i}"]))
        else:
            nodes.append(helper.make_node("ReduceMean", [key], [f"sel{i}"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("MatMul", [f"sel{i}", weight], [f"term{i}"]))  # (B, 1, D)
        terms.append(f"term{i}")
    for c in spec.cameras:
        key = IMAGE_PREFIX + c
        nodes.append(helper.make_node("ReduceMean", [key], [f"{c}_mean"], axes=[1, 2, 3, 4],
                                      keepdims=1))
        nodes.append(helper.make_node("Reshape", [f"{c}_mean", "b11"], [f"{c}_term"]))
        terms.append(f"{c}_term")
    if spec.cameras:
        inits.append(_B11)
    return nodes, inits, terms


def _sum(nodes: list, terms: list[str], out: str) -> None:
    acc = terms[0]
    for i, term in enumerate(terms[1:]):
        name = out if i == len(terms) - 2 else f"{out}_sum{i}"
        nodes.append(helper.make_node("Add", [acc, term], [name]))
        acc = name


def _act_graph(spec: ProofSpec, w: dict) -> onnx.GraphProto:
    k, d = spec.chunk_size, len(spec.action_names)
    nodes, inits, terms = _obs_terms(spec, w, "last")
    ramp = w["bias"][None, :] + spec.slope * np.arange(k, dtype=np.float32)[:, None]  # (k, D)
    inits.append(numpy_helper.from_array(ramp.astype(np.float32), "ramp"))
    _sum(nodes, [*terms, "ramp"], "action")
    return helper.make_graph(nodes, "proof_act", _obs_inputs(spec),
                             [_value("action", ["batch", k, d])], inits)


def _denoiser_graph(spec: ProofSpec, w: dict) -> onnx.GraphProto:
    k, d = spec.chunk_size, len(spec.action_names)
    nodes, inits, terms = _obs_terms(spec, w, "mean")
    if not spec.cameras:
        inits.append(_B11)
    inits += [numpy_helper.from_array(np.array(w["c_x"], np.float32), "c_x"),
              numpy_helper.from_array(np.array(w["c_t"], np.float32), "c_t")]
    nodes += [helper.make_node("Mul", ["x_t", "c_x"], ["x_term"]),
              helper.make_node("Cast", ["timestep"], ["t_float"], to=TensorProto.FLOAT),
              helper.make_node("Reshape", ["t_float", "b11"], ["t_b11"]),
              helper.make_node("Mul", ["t_b11", "c_t"], ["t_term"])]
    _sum(nodes, ["x_term", "t_term", *terms], "eps")
    inputs = [_value("x_t", ["batch", k, d]), _value("timestep", ["batch"], TensorProto.INT64),
              *_obs_inputs(spec)]
    return helper.make_graph(nodes, "proof_denoiser", inputs, [_value("eps", ["batch", k, d])],
                             inits)


def _io(graph: onnx.GraphProto) -> tuple[list[dict], list[dict]]:
    def spec(v: onnx.ValueInfoProto) -> dict:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        dtype = "int64" if v.type.tensor_type.elem_type == TensorProto.INT64 else "float32"
        return {"name": v.name, "shape": dims, "dtype": dtype, "description": "proof model"}

    return [spec(v) for v in graph.input], [spec(v) for v in graph.output]


def build_card(spec: ProofSpec, graph: onnx.GraphProto, w: dict, file: str) -> dict:
    inputs, outputs = _io(graph)
    observation: dict[str, dict] = {STATE_KEY: {"names": list(spec.state_names)}}
    if spec.classes:
        observation[ENV_STATE_KEY] = {
            "names": [f"{c}_{f}" for c in spec.classes for f in spec.fields],
            "classes": list(spec.classes), "fields": list(spec.fields)}
    for cam in spec.cameras:
        observation[IMAGE_PREFIX + cam] = {"height": spec.image_size[0],
                                           "width": spec.image_size[1]}
    card = {
        "format": CARD_FORMAT,
        "policy": {"kind": spec.kind, "config": {"proof_model": True}},
        "onnx": {"file": file, "opset": OPSET, "inputs": inputs, "outputs": outputs},
        "control": {"fps": spec.fps, "chunk_size": spec.chunk_size,
                    "n_obs_steps": spec.n_obs_steps,
                    "n_action_steps": max(1, spec.chunk_size // 2)},
        "observation": observation,
        "action": {"kind": spec.action_kind, "names": list(spec.action_names),
                   "topic": "joint_command" if spec.action_kind == "joint" else "ee_command"},
        "dataset": {"synthetic": True},
        "training": None,
    }
    if spec.kind == "diffusion":
        card["diffusion"] = {
            **spec.schedule.to_dict(), "num_inference_steps": spec.num_inference_steps,
            "timestep_spacing": spec.timestep_spacing, "eta": 0.0,
            "alphas_cumprod": alphas_cumprod(spec.schedule).tolist(),
            "unnormalize": {"offset": w["offset"].tolist(), "scale": w["scale"].tolist()}}
    return card


def write_proof_model(directory: Path | str, spec: ProofSpec | None = None,
                      file: str = "policy.onnx") -> ProofModel:
    """directory/{file, model_card.json} for `spec` (default: ProofSpec()); returns the path
    and weights."""
    spec = spec or ProofSpec()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    w = _weights(spec)
    graph = _act_graph(spec, w) if spec.kind == "act" else _denoiser_graph(spec, w)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="armstack_policy.proof_models")
    onnx.checker.check_model(model)
    path = directory / file
    onnx.save(model, path)
    card = build_card(spec, graph, w, file)
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return ProofModel(path, spec, w)
