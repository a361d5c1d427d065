"""PolicyRuntime (control ticks, inference steps, diagnostics) and the node's parameter config,
with a scripted policy and the real ObservationAssembler and ChunkBuffer."""

import numpy as np
import pytest
import yaml
from armstack_common.diagnostics import Level
from armstack_common.paths import config_file
from armstack_policy.chunk_buffer import ChunkBuffer, ChunkBufferConfig, ChunkVerdict, StepStatus
from armstack_policy.node_config import POLICY_PARAMS, PolicyNodeConfig
from armstack_policy.observation import DetectedObject, ObservationAssembler, ObservationConfig
from armstack_policy.onnx_policy import PolicyCard, find_card
from armstack_policy.runtime import NOT_READY, ControlTiming, PolicyNotReady, PolicyRuntime

NAMES = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger")
K, DT, T0 = 10, 0.02, 500.0


class ScriptedPolicy:
    """Chunk row i = state + i (all columns); records calls; `hook` runs inside predict."""

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0
        self.hook = None
        self.poison = False
        self.not_ready = ""  # reason predict_chunk raises PolicyNotReady with, if set

    def reset(self) -> None:
        self.resets += 1

    def predict_chunk(self, observation: dict) -> np.ndarray:
        self.calls += 1
        if self.not_ready:
            raise PolicyNotReady(self.not_ready)
        if self.hook is not None:
            self.hook()
        state = observation["observation.state"][-1]  # (7,)
        chunk = state[None, :] + np.arange(K, dtype=np.float32)[:, None]
        return np.full_like(chunk, np.nan) if self.poison else chunk


def make(running: bool = True,
         mode: str = "receding_horizon") -> tuple[PolicyRuntime, ScriptedPolicy]:
    policy = ScriptedPolicy()
    asm = ObservationAssembler(ObservationConfig(
        state_names=NAMES, object_classes=("red",), spacing=DT, max_observation_age=0.2,
        max_source_skew=0.05))
    buf = ChunkBuffer(ChunkBufferConfig(mode=mode, chunk_size=K, action_dim=7, dt=DT))
    return PolicyRuntime(policy, asm, buf, running=running), policy


def observe(rt: PolicyRuntime, t: float, state: float = 0.0) -> None:
    """joint_states up to t (every 10 ms) and an objects message stamped t."""
    for ts in np.arange(t - 0.04, t + 1e-9, 0.01):
        rt.assembler.add_joint_state(ts, NAMES, [state] * 7)
    rt.assembler.add_objects(t, [DetectedObject("red_cube", 0.9, (0.3, 0.0, 0.02))])


# ---------------------------------------------------------------- control timing


def test_control_timing_jitter_and_missed_periods():
    timing = ControlTiming(0.02)
    times = [0.0, 0.021, 0.040, 0.080, 0.100, 0.161]  # one late, one and two periods missed
    missed = [timing.tick(t) for t in times]
    assert missed == [0, 0, 0, 1, 0, 2] and timing.missed == 3 and timing.ticks == 6
    summary = timing.jitter_ms.summary()
    assert summary["max"] == pytest.approx(41.0) and summary["median"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="period"):
        ControlTiming(0.0)


# ---------------------------------------------------------------- ticks and inference


def test_stopped_runtime_publishes_nothing_and_does_not_infer():
    rt, policy = make(running=False)
    observe(rt, T0)
    assert rt.tick(T0, 0.0).status is None
    assert rt.work(lambda: T0, timeout=0.01) is None and policy.calls == 0
    assert rt.start() and not rt.start()
    assert rt.work(lambda: T0, timeout=0.01) is None  # start cleared the observations


def test_chunk_goes_out_one_action_per_tick_with_the_observation_stamp():
    rt, policy = make()
    observe(rt, T0, state=1.0)
    result = rt.work(lambda: T0 + 0.03, timeout=0.5)
    assert result.verdict is ChunkVerdict.ACCEPTED and result.assembly.stamp == T0
    assert rt.work(lambda: T0 + 0.03, timeout=0.01) is None  # the same frame is used once
    steps = [rt.tick(T0 + 0.04 + i * DT, i * DT) for i in range(K - 2)]
    assert [s.status for s in steps] == [StepStatus.OK] * (K - 2)
    assert all(s.t_obs == T0 for s in steps)
    # Receding horizon plays index 2.. (actions 0 and 1 were for times already past).
    np.testing.assert_allclose([s.action[0] for s in steps], 1.0 + np.arange(2, K))
    hold = rt.tick(T0 + 0.04 + (K - 2) * DT, (K - 2) * DT)
    assert hold.action is None and hold.status is StepStatus.DRY and hold.t_obs == T0
    assert rt.published == K - 2 and rt.holds["dry"] == 1


def test_a_newer_frame_gives_a_newer_stamp():
    rt, _ = make(mode="async_latency_compensated")
    observe(rt, T0)
    rt.work(lambda: T0 + 0.01, timeout=0.5)
    assert rt.tick(T0 + 0.02, 0.0).t_obs == T0
    observe(rt, T0 + 0.033)
    assert rt.work(lambda: T0 + 0.04, timeout=0.5).verdict.accepted
    assert rt.tick(T0 + 0.04, DT).t_obs == T0 + 0.033


def test_stale_observation_holds_and_is_reported():
    rt, policy = make()
    observe(rt, T0)
    result = rt.work(lambda: T0 + 0.5, timeout=0.5)
    assert not result.assembly.ready and result.chunk is None and policy.calls == 0
    assert rt.refusals["stale"] == 1
    assert rt.tick(T0 + 0.5, 0.0).status is StepStatus.EMPTY
    report = rt.report("policy", T0 + 0.5)
    assert report.level == Level.WARN
    assert report.values["stale_observations"] == "1"
    assert "refused" in report.message and "no observation newer than" in report.message
    assert rt.report("policy", T0 + 0.5).values["stale_observations"] == "1"


def test_a_stalled_camera_is_counted_in_holds_though_nothing_is_refused():
    rt, _ = make()
    observe(rt, T0)
    assert rt.work(lambda: T0 + 0.01, timeout=0.5).verdict.accepted
    # Ticks inside the chunk publish; past its end the buffer is dry and the frame at T0 is
    # older than max_observation_age 0.2 s: each such tick is a stale hold.
    ticks = [rt.tick(T0 + 0.01 + i * DT, i * DT) for i in range(30)]
    held = [t for t in ticks if t.action is None]
    assert held and rt.stale_holds == len(held)
    assert rt.refusals["stale"] == 0
    report = rt.report("policy", T0 + 0.6)
    assert report.values["hold_stale_observation"] == str(len(held))
    assert float(report.values["observation_age_ms"]) == pytest.approx(600.0)
    assert "no observation newer than" in report.message
    observe(rt, T0 + 0.6)  # frames are back: fresh again, no new stale holds
    rt.work(lambda: T0 + 0.61, timeout=0.5)
    rt.tick(T0 + 0.62, 1.0)
    assert rt.stale_holds == len(held)


def test_reset_during_inference_drops_the_chunk():
    rt, policy = make()
    observe(rt, T0)
    policy.hook = rt.reset
    result = rt.infer(T0 + 0.01)
    assert result.chunk is None and rt.buffer.depth == 0 and policy.resets == 2  # start + reset
    policy.hook = None
    observe(rt, T0 + 0.033)
    assert rt.infer(T0 + 0.04).verdict.accepted


def test_stop_drops_chunks_and_a_chunk_finished_after_it():
    rt, policy = make()
    observe(rt, T0)
    rt.infer(T0 + 0.01)
    assert rt.buffer.depth == 1
    assert rt.stop() and not rt.stop()
    assert rt.buffer.depth == 0 and rt.tick(T0 + 0.02, 0.0).status is None
    rt.start()
    observe(rt, T0 + 0.05)
    policy.hook = rt.stop
    assert rt.infer(T0 + 0.06).chunk is None and rt.buffer.depth == 0


def test_a_policy_not_ready_holds_and_is_reported_without_an_error():
    rt, policy = make()
    policy.not_ready = "no instruction yet"
    observe(rt, T0)
    result = rt.infer(T0 + 0.01)
    assert result.assembly.ready and result.chunk is None and result.problem == "no instruction yet"
    assert rt.buffer.depth == 0 and rt.tick(T0 + 0.02, 0.0).status is StepStatus.EMPTY
    report = rt.report("policy", T0 + 0.02)
    assert report.level == Level.WARN and "no instruction yet" in report.message
    assert report.values[NOT_READY] == "1" and report.values["errors"] == "0"
    policy.not_ready = ""  # e.g. the instruction arrived
    observe(rt, T0 + 0.04)
    assert rt.infer(T0 + 0.05).verdict is ChunkVerdict.ACCEPTED


def test_non_finite_chunks_are_dropped_and_reported_as_errors():
    rt, policy = make()
    policy.poison = True
    observe(rt, T0)
    assert rt.infer(T0 + 0.01).chunk is None and rt.buffer.depth == 0
    report = rt.report("policy", T0 + 0.01)
    assert report.level == Level.ERROR and "NaN" in report.message


def test_report_lists_timing_buffer_and_counts():
    rt, _ = make()
    observe(rt, T0)
    rt.infer(T0 + 0.01)
    for i in range(5):
        rt.tick(T0 + 0.02 + i * DT, i * DT)
    rt.tick(T0 + 0.02 + 6 * DT, 6 * DT)  # one period missed
    report = rt.report("policy", T0 + 0.15)
    values = report.values
    for key in ("inference_ms_median", "inference_ms_p99", "control_jitter_ms_median",
                "control_jitter_ms_p99", "control_jitter_ms_max", "buffer_depth", "dry_steps",
                "hold_dry", "stale_observations", "chunks_accepted"):
        assert key in values, key
    assert values["missed_periods"] == "1" and values["chunks_accepted"] == "1"
    assert values["commands_published"] == "6"
    # The missed period is also a 20 ms period error: past half a period, an ERROR.
    assert report.level == Level.ERROR and "1 control period(s) missed" in report.message
    assert "control_jitter_ms_p99" in report.message
    assert "missed" not in rt.report("policy", T0 + 0.15).message  # reported once


def test_report_thresholds_come_from_the_limits_and_change_live():
    rt, _ = make()
    observe(rt, T0)
    rt.work(lambda: T0 + 0.01, timeout=0.5)
    for i, late in enumerate([0.0, 0.007, 0.0, 0.007]):  # 7 ms late every other period
        rt.tick(T0 + i * DT, i * DT + late)
    report = rt.report("policy", T0 + 0.1)
    assert report.level == Level.WARN and "control_jitter_ms_p99" in report.message  # > 5 ms
    rt.limits = PolicyNodeConfig.from_params(
        defaults() | {"jitter_warn_ms": 8.0, "inference_warn_ms": 1e-3}).report_limits()
    report = rt.report("policy", T0 + 0.1)
    assert "control_jitter_ms_p99" not in report.message
    assert "inference_ms_p99" in report.message and report.level == Level.WARN


# ---------------------------------------------------------------- node parameters


def defaults() -> dict:
    return {spec.name: spec.default for spec in POLICY_PARAMS}


def test_parameter_defaults_make_a_valid_config_and_the_yaml_keys_exist():
    cfg = PolicyNodeConfig.from_params(defaults())
    assert cfg.runner.provider == "cpu" and not cfg.start_running
    node = yaml.safe_load(config_file("policy.yaml").read_text())["/**/policy"]
    yaml_values = node["ros__parameters"]
    assert set(yaml_values) <= set(defaults()), set(yaml_values) - set(defaults())
    PolicyNodeConfig.from_params(defaults() | yaml_values)


def card(directory, cameras=()) -> PolicyCard:
    proof = pytest.importorskip("armstack_policy.proof_models")  # needs onnx
    model = proof.write_proof_model(directory, proof.ProofSpec(chunk_size=16, cameras=cameras))
    return PolicyCard.from_dict(find_card(model.path))


@pytest.mark.parametrize(("mode", "max_chunks", "expected"), [
    ("temporal_ensemble", 0, 16), ("async_latency_compensated", 0, 8), ("receding_horizon", 3, 3)])
def test_buffer_config_follows_the_card(tmp_path, mode, max_chunks, expected):
    cfg = PolicyNodeConfig.from_params(defaults() | {"chunk_mode": mode, "max_chunks": max_chunks})
    buffer = cfg.buffer_config(card(tmp_path))
    assert (buffer.chunk_size, buffer.action_dim, buffer.dt) == (16, 7, 0.02)
    assert buffer.max_chunks == expected and buffer.n_action_steps == 8  # the card's


def test_observation_config_and_image_topics_follow_the_card(tmp_path):
    two = card(tmp_path, cameras=("front", "wrist"))
    cfg = PolicyNodeConfig.from_params(defaults())
    obs = cfg.observation_config(two)
    assert obs.cameras == ("front", "wrist") and obs.image_size == (8, 8) and obs.spacing == 0.02
    with pytest.raises(ValueError, match=r"image_topic must contain \{camera\}"):
        cfg.image_topics(two)
    cfg = PolicyNodeConfig.from_params(defaults() | {"image_topic": "{camera}/color/image_raw"})
    assert cfg.image_topics(two) == {"front": "front/color/image_raw",
                                     "wrist": "wrist/color/image_raw"}


@pytest.mark.parametrize(("override", "field"), [
    ({"model_path": ""}, "model_path"), ({"provider": "gpu"}, "provider"),
    ({"image_qos": "fast"}, "image_qos"), ({"min_inference_period": -1.0}, "min_inference_period"),
    ({"jitter_warn_ms": 20.0}, "jitter_error_ms"), ({"inference_warn_ms": 0.0}, "inference_warn_ms")])
def test_config_names_the_bad_parameter(override, field):
    with pytest.raises(ValueError, match=field):
        PolicyNodeConfig.from_params(defaults() | override)
