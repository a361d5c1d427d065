"""Substitution grammar, evaluation and command-line splitting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from armstack_bringup.errors import LaunchError
from armstack_bringup.substitutions import Call
from armstack_bringup.substitutions import Scope
from armstack_bringup.substitutions import literal
from armstack_bringup.substitutions import parse_substitution
from armstack_bringup.substitutions import perform
from armstack_bringup.substitutions import split_command_line


def var(name: str, *default: str) -> Call:
    return Call("var", ((name,), *((d,) for d in default)))


@pytest.mark.parametrize("text, parts", [
    ("", ()),
    ("plain text", ("plain text",)),
    ("$(var x)", (var("x"),)),
    ("a/$(var x)/b", ("a/", var("x"), "/b")),
    ("$(var x)$(var y)", (var("x"), var("y"))),
    ("$(var x fallback)", (var("x", "fallback"),)),
    ("$(var x 'with space')", (var("x", "with space"),)),
    ('$(var x "double $(var y)")', (Call("var", (("x",), ("double ", var("y")))),)),
    ("$(find-pkg-share $(var pkg))/c.yaml",
     (Call("find-pkg-share", ((var("pkg"),),)), "/c.yaml")),
    ("$(env HOME /tmp)", (Call("env", (("HOME",), ("/tmp",))),)),
    ("$(dirname)/x.yaml", (Call("dirname", ()), "/x.yaml")),
    ("costs 5$ now", ("costs 5$ now",)),
    (r"\$(var x)", ("$(var x)",)),  # escaped: literal text
    (r"a\\b", (r"a\b",)),
    (r"$(var a\(b\))", (var("a(b)"),)),
])
def test_parse(text: str, parts: tuple) -> None:
    assert parse_substitution(text) == parts


@pytest.mark.parametrize("text, message", [
    ("$(var x", "expected ')'"),
    ("$(var)", "takes 1 to 2 argument(s), got 0"),
    ("$(var a b c)", "takes 1 to 2 argument(s), got 3"),
    ("$(dirname x)", "takes 0 argument(s)"),
    ("$(var 'x)", "unterminated"),
    ("$( var x)", "expected a substitution name"),
    ("$(var  x)", "empty substitution argument"),
    ("$(eval 1+1)", "$(eval) is part of ros2 launch but not supported"),
    ("$(command ls)", "$(command) is part of ros2 launch but not supported"),
    ("$(bogus x)", "unknown substitution $(bogus)"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(LaunchError, match=re.escape(message)):
        parse_substitution(text)


@pytest.fixture
def scope(tmp_path: Path) -> Scope:
    return Scope({"x": "1", "pkg": "demo_pkg", "name": "x"}, {"HOME": "/home/u"},
                 tmp_path / "dir" / "a.launch.yaml")


@pytest.mark.parametrize("text, expected", [
    ("$(var x)", "1"),
    ("$(var missing fallback)", "fallback"),
    ("$(var x fallback)", "1"),
    ("$(var $(var name))", "1"),  # nested: the name is itself substituted
    ("$(env HOME)", "/home/u"),
    ("$(env NOPE '')", ""),
    ("$(env NOPE $(var x))", "1"),
    ("pre-$(var x)-post", "pre-1-post"),
])
def test_perform(scope: Scope, text: str, expected: str) -> None:
    assert perform(parse_substitution(text), scope) == expected


def test_perform_files(scope: Scope) -> None:
    assert perform(parse_substitution("$(dirname)"), scope) == str(scope.current_file.parent)
    assert perform(parse_substitution("$(filename)"), scope) == str(scope.current_file)
    no_file = Scope({}, {})
    with pytest.raises(LaunchError, match="outside of a launch file"):
        perform(parse_substitution("$(dirname)"), no_file)


@pytest.mark.parametrize("text, message", [
    ("$(var missing)", "launch configuration 'missing' does not exist"),
    ("$(env NOPE)", "environment variable 'NOPE' does not exist"),
])
def test_perform_errors(scope: Scope, text: str, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        perform(parse_substitution(text), scope)


def test_find_package(scope: Scope, ament_prefix: Path) -> None:
    share = perform(parse_substitution("$(find-pkg-share $(var pkg))"), scope)
    assert share == str(ament_prefix / "share" / "demo_pkg")
    assert perform(parse_substitution("$(find-pkg-prefix demo_pkg)"), scope) == str(ament_prefix)
    with pytest.raises(LaunchError, match="package 'nope' not found in the ament index"):
        perform(parse_substitution("$(find-pkg-share nope)"), scope)


@pytest.mark.parametrize("text, expected", [
    ("a b  c", ["a", "b", "c"]),
    ("--rate $(var x)", ["--rate", "1"]),
    ("$(var x) $(var pkg)", ["1", "demo_pkg"]),
    ("$(var pkg)/cfg.yaml --flag", ["demo_pkg/cfg.yaml", "--flag"]),
    ("--opt=$(var x) tail", ["--opt=1", "tail"]),
    ("-c 'print(1, 2)'", ["-c", "print(1, 2)"]),
    ("a b c d $(var x)", ["a", "b", "c", "d", "1"]),
])
def test_split_command_line(scope: Scope, text: str, expected: list[str]) -> None:
    assert [perform(arg, scope) for arg in split_command_line(text)] == expected


def test_substitution_result_is_not_split() -> None:
    scope = Scope({"args": "two words"}, {})
    args = split_command_line("run $(var args)")
    assert [perform(arg, scope) for arg in args] == ["run", "two words"]


def test_literal() -> None:
    assert literal(parse_substitution("abc")) == "abc"
    assert literal(parse_substitution("")) == ""
    assert literal(parse_substitution("a$(var x)")) is None
