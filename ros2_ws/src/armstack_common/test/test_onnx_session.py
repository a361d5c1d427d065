import logging

import numpy as np
import pytest

from armstack_common.onnx_session import open_session, select_providers

EVERYTHING = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_select_providers_chain_and_trt_options():
    specs, notes = select_providers("tensorrt", EVERYTHING, True, "/tmp/engines")
    assert notes == []
    assert specs[0] == (
        "TensorrtExecutionProvider",
        {
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": "/tmp/engines",
        },
    )
    assert specs[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("requested", "available", "expected", "note"),
    [
        ("tensorrt", EVERYTHING[1:], ["CUDAExecutionProvider", "CPUExecutionProvider"],
         "using CUDAExecutionProvider instead"),
        ("cuda", ["CPUExecutionProvider"], ["CPUExecutionProvider"],
         "CUDAExecutionProvider (cuda)"),
        ("cpu", EVERYTHING, ["CPUExecutionProvider"], None),
    ],
)
def test_select_providers_falls_back_down_the_chain(requested, available, expected, note):
    specs, notes = select_providers(requested, available, False, "")
    assert specs == expected
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and note in notes[0]


def test_select_providers_names_the_bad_provider():
    with pytest.raises(ValueError, match="'gpu'"):
        select_providers("gpu", EVERYTHING, False, "")


def test_open_session_runs_a_model_and_logs_the_fallback(tmp_path, caplog):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "neg.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with caplog.at_level(logging.WARNING, logger="armstack_common.onnx_session"):
        session = open_session(path, "tensorrt", intra_op_threads=1, label="negator")
    assert session.get_providers()[-1] == "CPUExecutionProvider"
    (y,) = session.run(None, {"x": np.array([1.0, -2.0], np.float32)})
    np.testing.assert_array_equal(y, [-1.0, 2.0])
    if "TensorrtExecutionProvider" not in session.get_providers():
        assert "negator: TensorrtExecutionProvider (tensorrt) is not available" in caplog.text


def test_open_session_names_a_file_that_is_not_onnx(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"detector .*garbage\.onnx: not a usable ONNX model"):
        open_session(path, "cpu", label="detector")
