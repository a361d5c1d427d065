"""Where a file a user names is found: as given, from the working directory, else under models/."""

from pathlib import Path

import pytest
from armstack_common import paths


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    (folder / "policy").mkdir(parents=True)
    (folder / "policy" / "p.onnx").write_bytes(b"m")
    monkeypatch.setenv("ARMSTACK_MODELS_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def test_a_model_is_found_as_given_then_from_the_working_directory_then_under_models(models):
    outside = models.parent / "elsewhere.onnx"
    outside.write_bytes(b"m")
    assert paths.resolve_model(str(outside), "tool") == outside  # absolute
    assert paths.resolve_model("elsewhere.onnx", "tool") == Path("elsewhere.onnx")  # cwd
    assert paths.resolve_model("policy/p.onnx", "tool") == models / "policy" / "p.onnx"
    # a relative path that exists from the working directory wins over models/
    (models.parent / "policy").mkdir()
    (models.parent / "policy" / "p.onnx").write_bytes(b"local")
    assert paths.resolve_model("policy/p.onnx", "tool").read_bytes() == b"local"


def test_a_missing_model_names_the_path_and_the_tool_that_makes_it(models):
    with pytest.raises(paths.ArmstackPathError, match=r"models/policy/none\.onnx.*tools/x\.py"):
        paths.resolve_model("policy/none.onnx", "tools/x.py")
    assert paths.model_location("policy/none.onnx") == models / "policy" / "none.onnx"


def test_home_is_expanded(models, monkeypatch):
    monkeypatch.setenv("HOME", str(models.parent))
    found = paths.user_path("~/models/policy/p.onnx", Path("/nowhere"))
    assert found == models / "policy" / "p.onnx"
