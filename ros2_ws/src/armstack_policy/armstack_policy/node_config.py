"""Parameters of the policy node, declared once here and validated through `PolicyNodeConfig`
(no ROS; policy_node hands these to armstack_common.params.NodeParameters). What the model
fixes (rate, chunk size, observation and action layout) comes from its card, not from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from armstack_common.onnx_session import ORT_PROVIDER_NAMES
from armstack_common.params import ParamSpec

from armstack_policy.chunk_buffer import FAVOUR, MODES, ChunkBufferConfig
from armstack_policy.observation import ObservationConfig
from armstack_policy.onnx_policy import PolicyCard, RunnerConfig
from armstack_policy.runtime import ReportLimits

QOS_CHOICES = ("sensor_data", "reliable")
CAMERA_PLACEHOLDER = "{camera}"

POLICY_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "policy/act_pick/policy.onnx",
              "exported policy: absolute, relative to the working directory, or under models/; "
              "its model_card.json must sit beside it", read_only=True),
    ParamSpec("provider", "cpu", "ONNX Runtime execution provider; falls back down "
              "tensorrt -> cuda -> cpu", choices=tuple(sorted(ORT_PROVIDER_NAMES)), read_only=True),
    ParamSpec("intra_op_threads", 1, "ONNX Runtime threads; 0: all cores (1 leaves a core of a "
              "2-core machine to the control loop)", range=(0, 64), read_only=True),
    ParamSpec("fp16", False, "TensorRT only: build FP16 engines", read_only=True),
    ParamSpec("engine_cache_dir", "", "TensorRT only: engine cache directory; empty: no cache",
              read_only=True),
    ParamSpec("num_inference_steps", 0, "diffusion policies: DDIM steps; 0: the model card's",
              range=(0, 1000), read_only=True),
    ParamSpec("diffusion_samples", 0, "diffusion policies: chunks sampled per observation in "
              "one batch; above 1 the chunk is the mean of the half nearest their medoid (less "
              "sampling noise, one mode; inference time grows with it); 0: the model card's",
              range=(0, 64),
              read_only=True),
    ParamSpec("seed", 0, "diffusion policies: seed of the initial noise; vla policies: seed of "
              "temperature sampling; restored on reset", range=(0, 2**31 - 1), read_only=True),
    ParamSpec("temperature", -1.0, "vla policies: decoding temperature, 0 greedy; -1: the model "
              "card's default", range=(-1.0, 100.0), read_only=True),
    ParamSpec("instruction", "", "vla policies: the instruction (e.g. \"put the red cube in the "
              "bin\") until one arrives on policy/instruction; empty: hold until then",
              read_only=True),
    ParamSpec("start_running", False, "publish commands from the start; false: wait for the "
              "policy/start service", read_only=True),
    ParamSpec("chunk_mode", "receding_horizon", "how chunks become one action per "
              "control step (armstack_policy.chunk_buffer)", choices=MODES, read_only=True),
    ParamSpec("ensemble_coeff", 0.01, "temporal_ensemble: m in the weights exp(-m * rank)",
              range=(0.0, 10.0), read_only=True),
    ParamSpec("ensemble_favour", "oldest", "temporal_ensemble: the chunk with the largest weight",
              choices=FAVOUR, read_only=True),
    ParamSpec("n_action_steps", 0, "receding_horizon: actions played per chunk; 0: the model "
              "card's", range=(0, 10000), read_only=True),
    ParamSpec("blend_steps", 5, "async_latency_compensated: crossfade length to a new chunk",
              "control steps", (0, 1000), read_only=True),
    ParamSpec("max_chunks", 0, "chunks held; 0: chunk_size for temporal_ensemble (a chunk every "
              "step), else 8", range=(0, 10000), read_only=True),
    ParamSpec("max_time_gap", 0.5, "a control-clock step larger than this is a time jump: "
              "chunks dropped, hold", "s", (0.04, 60.0), read_only=True),
    ParamSpec("max_observation_age", 0.25, "refuse observations whose camera stamp is older "
              "(or further ahead of the clock) than this: the policy holds", "s", (0.001, 10.0)),
    ParamSpec("max_source_skew", 0.1, "refuse observations where a source's message is further "
              "than this from the frame time (e.g. joint_states stopped)", "s", (0.001, 10.0)),
    ParamSpec("history_size", 64, "messages kept per observation source", range=(2, 10000),
              read_only=True),
    ParamSpec("min_inference_period", 0.0, "least time between inferences; 0: one per new "
              "camera frame", "s", (0.0, 10.0)),
    ParamSpec("image_topic", "camera/color/image_raw", "image topic of an image policy; with "
              f"several cameras it must contain {CAMERA_PLACEHOLDER} (the card's camera name)",
              read_only=True),
    ParamSpec("image_qos", "sensor_data", "QoS of the image subscriptions", choices=QOS_CHOICES,
              read_only=True),
    ParamSpec("base_frame", "base_link", "frame of end-effector commands and of the path",
              read_only=True),
    ParamSpec("urdf_path", "", "robot description for the path of joint-space chunks; empty: "
              "armstack's config/robot/arm.urdf", read_only=True),
    ParamSpec("diagnostics_period", 1.0, "period of the diagnostics status", "s", (0.1, 60.0),
              read_only=True),
    ParamSpec("jitter_warn_ms", 5.0, "diagnostics warn when the control timer's period error "
              "(p99) exceeds this", "ms", (0.1, 1000.0)),
    ParamSpec("jitter_error_ms", 10.0, "diagnostics error when the control timer's period error "
              "(p99) exceeds this", "ms", (0.1, 1000.0)),
    ParamSpec("inference_warn_ms", 100.0, "diagnostics warn when inference time (p99) exceeds "
              "this", "ms", (0.1, 100000.0)),
)


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Every policy node parameter; validated on construction (errors name the field)."""

    model_path: str
    runner: RunnerConfig
    start_running: bool = False
    chunk_mode: str = "receding_horizon"
    ensemble_coeff: float = 0.01
    ensemble_favour: str = "oldest"
    n_action_steps: int = 0  # 0: the card's
    blend_steps: int = 5
    max_chunks: int = 0  # 0: automatic
    max_time_gap: float = 0.5  # s
    max_observation_age: float = 0.25  # s
    max_source_skew: float = 0.1  # s
    history_size: int = 64
    min_inference_period: float = 0.0  # s
    instruction: str = ""  # vla: the first instruction; "" = none until policy/instruction
    image_topic: str = "camera/color/image_raw"
    image_qos: str = "sensor_data"
    base_frame: str = "base_link"
    urdf_path: str = ""
    diagnostics_period: float = 1.0  # s
    jitter_warn_ms: float = 5.0
    jitter_error_ms: float = 10.0
    inference_warn_ms: float = 100.0

    def __post_init__(self) -> None:
        for name in ("model_path", "base_frame", "image_topic"):
            if not getattr(self, name):
                raise ValueError(f"PolicyNodeConfig.{name} must not be empty")
        if self.chunk_mode not in MODES:
            raise ValueError(f"PolicyNodeConfig.chunk_mode must be one of {MODES}, "
                             f"got {self.chunk_mode!r}")
        if self.image_qos not in QOS_CHOICES:
            raise ValueError(f"PolicyNodeConfig.image_qos must be one of {QOS_CHOICES}, "
                             f"got {self.image_qos!r}")
        if not self.min_inference_period >= 0.0:
            raise ValueError(f"PolicyNodeConfig.min_inference_period must be >= 0, "
                             f"got {self.min_inference_period}")
        if not self.diagnostics_period > 0.0:
            raise ValueError(f"PolicyNodeConfig.diagnostics_period must be > 0, "
                             f"got {self.diagnostics_period}")
        if not 0.0 < self.jitter_warn_ms <= self.jitter_error_ms:
            raise ValueError(f"PolicyNodeConfig.jitter_error_ms must be >= jitter_warn_ms > 0, "
                             f"got {self.jitter_error_ms} and {self.jitter_warn_ms}")
        if not self.inference_warn_ms > 0.0:
            raise ValueError(f"PolicyNodeConfig.inference_warn_ms must be > 0, "
                             f"got {self.inference_warn_ms}")

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> PolicyNodeConfig:
        runner = RunnerConfig(
            provider=values["provider"], intra_op_threads=int(values["intra_op_threads"]),
            fp16=bool(values["fp16"]), engine_cache_dir=values["engine_cache_dir"],
            num_inference_steps=int(values["num_inference_steps"]), seed=int(values["seed"]),
            diffusion_samples=int(values["diffusion_samples"]),
            temperature=None if float(values["temperature"]) < 0 else float(values["temperature"]))
        fields = {name: values[name] for name in cls.__dataclass_fields__ if name != "runner"}
        for name in ("ensemble_coeff", "max_time_gap", "max_observation_age", "max_source_skew",
                     "min_inference_period", "diagnostics_period", "jitter_warn_ms",
                     "jitter_error_ms", "inference_warn_ms"):
            fields[name] = float(fields[name])
        return cls(runner=runner, **fields)

    def report_limits(self) -> ReportLimits:
        return ReportLimits(self.jitter_warn_ms, self.jitter_error_ms, self.inference_warn_ms)

    def buffer_config(self, card: PolicyCard) -> ChunkBufferConfig:
        """The ChunkBuffer for this model: its chunk size, action size and rate."""
        auto_chunks = card.chunk_size if self.chunk_mode == "temporal_ensemble" else 8
        return ChunkBufferConfig(
            mode=self.chunk_mode, chunk_size=card.chunk_size, action_dim=card.action_dim,
            dt=card.dt, max_chunks=max(2, self.max_chunks or auto_chunks),
            ensemble_coeff=self.ensemble_coeff, favour=self.ensemble_favour,
            n_action_steps=min(self.n_action_steps or card.n_action_steps, card.chunk_size),
            blend_steps=self.blend_steps, max_time_gap=self.max_time_gap)

    def observation_config(self, card: PolicyCard) -> ObservationConfig:
        """Observation layout from the card, staleness limits from the parameters."""
        return ObservationConfig.for_card(
            card, max_observation_age=self.max_observation_age,
            max_source_skew=self.max_source_skew, history_size=self.history_size)

    def image_topics(self, card: PolicyCard) -> dict[str, str]:
        """Camera name -> image topic."""
        cameras = [c for c, _, _ in card.cameras]
        if len(cameras) > 1 and CAMERA_PLACEHOLDER not in self.image_topic:
            raise ValueError(f"PolicyNodeConfig.image_topic must contain {CAMERA_PLACEHOLDER} for "
                             f"the model's {len(cameras)} cameras {cameras}")
        return {c: self.image_topic.replace(CAMERA_PLACEHOLDER, c) for c in cameras}
