"""ONNX Runtime sessions with the execution provider chosen by parameter (no ROS).

Every armstack model (detector, policies) runs through `open_session`. The provider is asked
for by name (tensorrt, cuda, cpu) and falls back down the chain TensorRT -> CUDA -> CPU:
whatever part of the chain this onnxruntime build offers is handed to the session, and each
provider that is missing is logged with what runs instead. onnxruntime is imported only when a
session is opened, so importing this module costs nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ORT_PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_FALLBACK_CHAIN = {
    "tensorrt": ("tensorrt", "cuda", "cpu"),
    "cuda": ("cuda", "cpu"),
    "cpu": ("cpu",),
}

ProviderSpec = str | tuple[str, dict[str, str]]


def select_providers(
    requested: str, available: list[str], fp16: bool, engine_cache_dir: str
) -> tuple[list[ProviderSpec], list[str]]:
    """Providers to hand onnxruntime for `requested`, and a note per missing provider.

    The whole available part of the fallback chain is passed, so nodes a faster provider cannot
    run still fall back to the next one inside the same session.
    """
    if requested not in _FALLBACK_CHAIN:
        raise ValueError(f"provider must be one of {sorted(ORT_PROVIDER_NAMES)}, got {requested!r}")
    chain = _FALLBACK_CHAIN[requested]
    usable = [p for p in chain if ORT_PROVIDER_NAMES[p] in available]
    if "cpu" not in usable:  # every onnxruntime build has it; keep the chain's floor anyway
        usable.append("cpu")
    notes = [
        f"{ORT_PROVIDER_NAMES[p]} ({p}) is not available in this onnxruntime build "
        f"(available: {', '.join(available)}); using {ORT_PROVIDER_NAMES[usable[0]]} instead"
        for p in chain[: chain.index(usable[0])]
    ]
    specs: list[ProviderSpec] = []
    for p in usable:
        if p == "tensorrt":
            options = {
                "trt_fp16_enable": str(fp16),
                "trt_engine_cache_enable": str(bool(engine_cache_dir)),
            }
            if engine_cache_dir:
                options["trt_engine_cache_path"] = str(Path(engine_cache_dir).expanduser())
            specs.append((ORT_PROVIDER_NAMES[p], options))
        else:
            specs.append(ORT_PROVIDER_NAMES[p])
    return specs, notes


def open_session(
    path: Path | str,
    provider: str,
    *,
    fp16: bool = False,
    engine_cache_dir: str = "",
    intra_op_threads: int = 0,
    label: str = "model",
) -> Any:
    """An onnxruntime.InferenceSession on `provider`'s fallback chain.

    intra_op_threads 0 is onnxruntime's default (all cores); fewer leaves cores to the control
    loop on small machines. `label` names the model in the log lines.
    """
    import onnxruntime as ort

    specs, notes = select_providers(provider, ort.get_available_providers(), fp16, engine_cache_dir)
    for note in notes:
        logger.warning("%s: %s", label, note)
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=specs)
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoSuchFile,
            ort_errors.NoModel, ort_errors.InvalidArgument, ort_errors.Fail) as exc:
        # onnxruntime's load errors share no base class but Exception; to the nodes each one
        # means a bad file, reported like a bad parameter (one line, no traceback).
        raise ValueError(f"{label} {path}: not a usable ONNX model: {exc}") from exc
    wanted = specs[0] if isinstance(specs[0], str) else specs[0][0]
    if wanted not in session.get_providers():
        # Present in the build but failed to start (e.g. TensorRT/CUDA libraries missing).
        logger.warning("%s: %s failed to initialise; running on %s", label, wanted,
                       session.get_providers()[0])
    logger.info("%s %s runs on %s", label, Path(path).name, ", ".join(session.get_providers()))
    return session
