"""parameter_sources: which parameter file (or -p) on a ROS command line set a parameter, so a
start-up error can name the file to fix."""

import pytest

from armstack_common.params import parameter_sources


@pytest.fixture
def files(tmp_path):
    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


@pytest.mark.parametrize("key, node, applies", [
    ("/**", "/policy", True),
    ("/**", "/ns/policy", True),
    ("/**/policy", "/policy", True),
    ("/**/policy", "/arm/left/policy", True),
    ("/**/policy", "/policy2", False),
    ("policy", "/policy", True),
    ("/policy", "/ns/policy", False),
    ("/ns/*", "/ns/policy", True),
    ("/ns/*", "/other/policy", False),
    ("ik", "/policy", False),
])
def test_node_keys_match_like_ros_parameter_files(files, key, node, applies):
    path = files("p.yaml", f"{key}:\n  ros__parameters:\n    rate: 5.0\n")
    assert parameter_sources(["x", "--ros-args", "--params-file", path], node, "rate") == (
        [path] if applies else [])


def test_every_setting_file_and_override_is_listed_in_order(files):
    base = files("base.yaml", "/**/ik:\n  ros__parameters:\n    rate: 5.0\n"
                              "/**/driver:\n  ros__parameters:\n    port: /dev/x\n")
    nested = files("nested.yaml", "/**:\n  ros__parameters:\n    tracker:\n      gate_m: 2.0\n"
                                  "    rate: 1.0\n")
    other = files("other.yaml", "/**/ik:\n  ros__parameters:\n    gain: 1.0\n")
    argv = ["ik_node", "--ros-args", "-r", "__node:=ik", "--params-file", base,
            "--params-file", other, "--params-file", nested, "-p", "rate:=3.0"]
    assert parameter_sources(argv, "/ik", "rate") == [base, nested, "-p on the command line"]
    assert parameter_sources(argv, "/ik", "tracker.gate_m") == [nested]
    assert parameter_sources(argv, "/ik", "port") == []  # set for another node
    assert parameter_sources(argv, "/ik", "missing") == []


def test_unreadable_or_odd_files_are_skipped(files, tmp_path):
    broken = files("broken.yaml", "a: [1, 2\n")
    scalar = files("scalar.yaml", "42\n")
    argv = ["n", "--ros-args", "--params-file", broken, "--params-file", scalar,
            "--params-file", str(tmp_path / "absent.yaml"), "-p", "ik:rate:=2.0"]
    assert parameter_sources(argv, "/ik", "rate") == ["-p on the command line"]
