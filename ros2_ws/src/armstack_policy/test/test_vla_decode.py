"""VLA decoding without torch: constrained token choice, the decode loop, the card, and the
runner's plumbing over stand-in sessions (stacked and per-layer caches, table tokenizer).
The runner on real exported graphs is tested with the exporter (armstack_learning)."""

import copy

import numpy as np
import pytest

from armstack_policy.onnx_policy import CardError, is_vla_card
from armstack_policy.vla_decode import (
    NoInstructionError,
    VLACard,
    VLADecodeConfig,
    VLARunner,
    choose_tokens,
    decode_tokens,
    masked_logits,
)
from armstack_policy.vla_tokens import WordTokenizer

NUM_BINS, WORDS, L = 4, ("bin", "red", "put"), 3
OFFSET = 3 + len(WORDS)  # first action token id
VOCAB = OFFSET + NUM_BINS
PREFIX = 2 + L + 2  # 2 patches, instruction, state, <act>
CHUNK, DIM = 2, 2


def test_choice_is_restricted_to_allowed_tokens():
    logits = np.array([[9.0, 1.0, 2.0, 0.5], [0.0, 0.0, 5.0, 9.0]])
    allowed = np.array([False, True, True, False])
    assert np.isneginf(masked_logits(logits, allowed)[:, [0, 3]]).all()
    assert choose_tokens(logits, allowed, 0.0, None).tolist() == [2, 2]
    rng = np.random.default_rng(0)
    draws = np.stack([choose_tokens(logits, allowed, 1.0, rng) for _ in range(4000)])
    assert set(np.unique(draws)) <= {1, 2}
    # softmax over the allowed logits of row 0: p(2) = e^2 / (e^1 + e^2) = 0.731
    assert abs((draws[:, 0] == 2).mean() - 0.731) < 0.03
    with pytest.raises(ValueError, match="random generator"):
        choose_tokens(logits, allowed, 1.0, None)


def test_decode_loop_feeds_each_token_at_its_position():
    allowed = np.zeros(10, bool)
    allowed[5:] = True
    calls = []

    def prefill():
        logits = np.zeros((1, 10))
        logits[0, 9] = 1.0
        return logits, ["prefix"]

    def step(token, position, cache):
        calls.append((int(token[0, 0]), position, len(cache)))
        logits = np.zeros((1, 10))
        logits[0, 0] = 100.0  # not allowed: must never come out
        logits[0, 5 + position % 5] = 1.0
        return logits, [*cache, int(token[0, 0])]

    result = decode_tokens(prefill, step, 4, allowed, prefix_length=7)
    assert result.tokens.tolist() == [[9, 7, 8, 9]]
    assert calls == [(9, 7, 1), (7, 8, 2), (8, 9, 3)]
    assert result.logits.shape == (1, 4, 10) and result.logits[0, 1, 0] == 100.0
    with pytest.raises(ValueError, match="temperature"):
        decode_tokens(prefill, step, 4, allowed, 7, temperature=-1.0)


def _card(layout: str = "stacked", tokenizer: dict | None = None) -> dict:
    cache = {"layout": layout, "n_layers": 2, "n_heads": 1, "head_dim": 2}
    if layout == "per_layer":
        cache |= {"past_key": "past.{i}.key", "past_value": "past.{i}.value",
                  "present_key": "present.{i}.key", "present_value": "present.{i}.value"}
    step_io = {"token": "token", "logits": "logits", "position": "position"}
    if layout == "per_layer":
        step_io = {"token": "input_ids", "logits": "logits", "attention_mask": "attention_mask"}
    return {
        "format": "armstack-model-card/1", "policy": {"kind": "vla"},
        "control": {"fps": 30, "chunk_size": CHUNK, "n_action_steps": 1, "n_obs_steps": 1},
        "observation": {"observation.state": {"names": ["a", "b"]},
                        "observation.images.color": {"height": 4, "width": 8}},
        "action": {"kind": "joint", "names": ["a", "b"]},
        "onnx": {"prefill": {"file": "policy.onnx", "inputs": [
                     {"name": "observation.state", "shape": ["batch", 1, 2]}]},
                 "step": {"file": "policy_step.onnx", "inputs": [
                     {"name": "position", "shape": [1]}]}},
        "vla": {"tokenizer": tokenizer or WordTokenizer(WORDS, L).to_dict(),
                "actions": {"num_bins": NUM_BINS, "low": [0.0, -1.0], "high": [1.0, 1.0],
                            "bin_token_ids": list(range(OFFSET, VOCAB))},
                "vocab_size": VOCAB, "prefix": {"length": PREFIX}, "cache": cache,
                "io": {"prefill": {"instruction": "instruction_tokens", "logits": "logits"},
                       "step": step_io}}}


class _Tensor:
    def __init__(self, name: str, shape: tuple = ()) -> None:
        self.name, self.shape = name, shape


class _Session:
    """Stand-in for an onnxruntime session: named inputs/outputs and a function."""

    def __init__(self, inputs: dict[str, tuple], outputs: list[str], fn) -> None:  # noqa: ANN001
        self._inputs, self._outputs, self._fn = inputs, outputs, fn
        self.calls: list[dict] = []

    def get_inputs(self) -> list[_Tensor]:
        return [_Tensor(n, s) for n, s in self._inputs.items()]

    def get_outputs(self) -> list[_Tensor]:
        return [_Tensor(n) for n in self._outputs]

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]

    def run(self, names: list[str], feeds: dict) -> list[np.ndarray]:
        self.calls.append(feeds)
        out = self._fn(feeds)
        return [out[n] for n in names]


def _logits(best_bin: np.ndarray) -> np.ndarray:
    """(B, V) logits whose best allowed token is bin best_bin; a word token scores higher."""
    logits = np.zeros((len(best_bin), VOCAB), np.float32)
    logits[:, 4] = 50.0
    logits[np.arange(len(best_bin)), OFFSET + best_bin % NUM_BINS] = 10.0
    return logits


def _cache_names(card: dict) -> tuple[list[str], list[str]]:
    """(past inputs, present outputs) of the step graph the card describes."""
    c = card["vla"]["cache"]
    if c["layout"] == "stacked":
        return ["past_key", "past_value"], ["present_key", "present_value"]
    past = [c[n].format(i=i) for n in ("past_key", "past_value") for i in range(2)]
    return past, [c[n].format(i=i) for n in ("present_key", "present_value") for i in range(2)]


def _sessions(card: dict) -> tuple[_Session, _Session]:
    """Prefill: best bin = sum of instruction ids; step: best bin = position + token. The
    cache grows by one row per step, and the fed position must be its length - 1."""
    past, present = _cache_names(card)
    per_layer = card["vla"]["cache"]["layout"] == "per_layer"
    io = card["vla"]["io"]["step"]

    def cache(length: int) -> dict:
        shape = (1, 1, length, 2) if per_layer else (2, 1, 1, length, 2)
        return {n: np.zeros(shape, np.float32) for n in present}

    def prefill(feeds: dict) -> dict:
        assert feeds["observation.state"].shape == (1, 1, 2)
        assert feeds["observation.images.color"].shape == (1, 1, 3, 4, 8)
        return {"logits": _logits(feeds["instruction_tokens"].sum(axis=1))} | cache(PREFIX)

    def step(feeds: dict) -> dict:
        length = feeds[past[0]].shape[-2] + 1
        if per_layer:
            assert feeds["attention_mask"].shape == (1, length)
        else:
            assert int(feeds["position"][0]) == length - 1
        return {"logits": _logits(length - 1 + feeds[io["token"]][:, 0])} | cache(length)

    extra = {"attention_mask": ("batch", "t")} if per_layer else {"position": (1,)}
    step_inputs = {io["token"]: ("batch", 1)} | {n: () for n in past} | extra
    prefill_session = _Session({"observation.state": ("batch", 1, 2),
                                "observation.images.color": ("batch", 1, 3, 4, 8),
                                "instruction_tokens": ("batch", L)}, ["logits", *present],
                               prefill)
    return prefill_session, _Session(step_inputs, ["logits", *present], step)


def _expected_tokens(instruction_ids: np.ndarray) -> list[int]:
    tokens = [OFFSET + int(instruction_ids.sum()) % NUM_BINS]
    for i in range(1, CHUNK * DIM):
        tokens.append(OFFSET + (PREFIX + i - 1 + tokens[-1]) % NUM_BINS)
    return tokens


def _observation() -> dict:
    return {"observation.state": np.zeros((1, 2)),
            "observation.images.color": np.zeros((1, 3, 4, 8))}


@pytest.mark.parametrize("layout", ["stacked", "per_layer"])
def test_runner_decodes_through_the_card_roles(layout):
    raw = _card(layout)
    card = VLACard.from_dict(raw)
    runner = VLARunner(card, *_sessions(raw), VLADecodeConfig())
    assert not runner.has_instruction
    with pytest.raises(NoInstructionError):
        runner.predict_chunk(_observation())
    assert runner.set_instruction("put the red") == ["the"]
    assert runner.has_instruction and runner.instruction == "put the red"
    ids = WordTokenizer(WORDS, L).encode("put red bin")
    runner.set_instruction("put red bin")
    result = runner.decode(_observation())
    assert result.tokens[0].tolist() == _expected_tokens(ids)
    chunk = runner.predict_chunk(_observation())
    assert chunk.shape == (CHUNK, DIM)
    assert np.allclose(chunk, card.bins.decode(result.tokens)[0])
    with pytest.raises(ValueError, match="shape"):
        runner.predict_chunk({"observation.state": np.zeros((1, 3)),
                              "observation.images.color": np.zeros((1, 3, 4, 8))})


def test_table_tokenizer_for_a_pretrained_model():
    table = {"type": "table", "max_tokens": L, "pad_id": 0,
             "entries": {"Put the red cube in the bin": [5, 1], "stop": [2]}}
    raw = _card(tokenizer=table)
    runner = VLARunner(VLACard.from_dict(raw), *_sessions(raw), VLADecodeConfig())
    assert runner.set_instruction("put the red cube in the bin.") == []
    assert runner.decode(_observation()).tokens[0].tolist() == _expected_tokens(np.array([5, 1]))
    with pytest.raises(ValueError, match="instruction table"):
        runner.set_instruction("put the blue cube in the bin")


def test_temperature_sampling_restarts_with_reset():
    raw = _card()
    runner = VLARunner(VLACard.from_dict(raw), *_sessions(raw),
                       VLADecodeConfig(temperature=5.0, seed=3))
    runner.set_instruction("put red")
    first = [runner.decode(_observation()).tokens.tolist() for _ in range(3)]
    runner.reset()
    again = [runner.decode(_observation()).tokens.tolist() for _ in range(3)]
    assert first == again and len({str(t) for t in first}) > 1
    assert all(OFFSET <= t < VOCAB for row in first for t in row[0])


@pytest.mark.parametrize("path, value, message", [
    (("policy", "kind"), "act", "policy.kind"),
    (("control", "fps"), 0, "control.fps"),
    (("vla", "cache", "layout"), "ring", "vla.cache.layout"),
    (("vla", "cache", "n_layers"), 0, "vla.cache.n_layers"),
    (("vla", "vocab_size"), OFFSET + 2, "beyond the vocabulary"),
    (("vla", "actions", "low"), [0.0], "vla: ActionBins.low"),
    (("action", "names"), ["a", "b", "c"], "2 ranges for 3 action names"),
    (("vla", "io", "step"), {"logits": "logits"}, "lacks roles"),
])
def test_card_errors_name_the_field(path, value, message):
    raw = copy.deepcopy(_card())
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(CardError, match=message):
        VLACard.from_dict(raw)


def test_runner_refuses_graphs_without_the_named_tensors():
    raw = _card()
    prefill, step = _sessions(raw)
    raw["vla"]["io"]["step"]["token"] = "input_ids"
    with pytest.raises(CardError, match="input_ids"):
        VLARunner(VLACard.from_dict(raw), prefill, step, VLADecodeConfig())


def test_card_fields_the_policy_node_reads():
    card = VLACard.from_dict(_card())
    assert is_vla_card(_card()) and not is_vla_card({"policy": {"kind": "act"}})
    assert card.kind == "vla" and card.cameras == (("color", 4, 8),)
    assert card.object_classes == () and card.n_obs_steps == 1
    assert card.dt == pytest.approx(1 / 30) and card.action_dim == 2
    assert card.n_action_tokens == CHUNK * DIM
    with pytest.raises(ValueError, match="temperature"):
        VLADecodeConfig(temperature=-0.5)


def test_waypoint_chunks_are_interpolated_to_the_card_rate():
    raw = _card()
    raw["control"]["chunk_size"] = 4  # 2 waypoints, 3 frames apart
    raw["vla"]["actions"] |= {"waypoints": CHUNK, "stride": 3}
    card = VLACard.from_dict(raw)
    assert card.n_action_tokens == CHUNK * DIM and card.chunk_size == 4
    runner = VLARunner(card, *_sessions(raw), VLADecodeConfig())
    runner.set_instruction("put red bin")
    chunk = runner.predict_chunk(_observation())
    waypoints = card.bins.decode(runner.decode(_observation()).tokens)[0]
    assert chunk.shape == (4, DIM)
    assert np.allclose(chunk[[0, 3]], waypoints)
    assert np.allclose(chunk[1], waypoints[0] + (waypoints[1] - waypoints[0]) / 3)
    raw["vla"]["actions"]["stride"] = 2
    with pytest.raises(CardError, match="waypoints"):
        VLACard.from_dict(raw)
