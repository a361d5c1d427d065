"""tools/build_trt_engine.py on a machine without TensorRT: a clear refusal, not a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "detector" / "detector.onnx"


@pytest.mark.skipif(not MODEL.is_file(), reason="models/detector/detector.onnx missing")
def test_refuses_clearly_without_tensorrt(tmp_path):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT: the build path is exercised on GPU machines")
    result = subprocess.run([sys.executable, str(REPO / "tools/build_trt_engine.py"), str(MODEL),
                             "--cache", str(tmp_path / "trt")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "TensorRT is not usable" in result.stderr and "CPUExecutionProvider" in result.stderr


def test_missing_model_is_named(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tools/build_trt_engine.py"), str(tmp_path / "nope.onnx"),
                             "--cache", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "nope.onnx" in result.stderr
