"""Substitutions of ROS 2's frontend launch format: `$(name arg ...)` inside attribute strings.

Parsing follows the grammar of `launch`'s frontend (share/launch/frontend/grammar.lark):

- outside a substitution, text runs until an unescaped `$(`; a backslash escapes the next
  character (`\\$(var x)` is the literal text `$(var x)`);
- a substitution is `$(` identifier, then arguments each preceded by exactly one space, then `)`;
- an argument is either a quoted string ('...' or "...", may hold spaces and substitutions) or
  a run of characters without spaces, quotes or parentheses, possibly with nested substitutions,
  e.g. `$(find-pkg-share $(var pkg))`.

Supported substitutions (the subset armstack's launch files use):

| substitution | meaning |
|---|---|
| `$(var name [default])` | a launch configuration (`arg`, `let`, `name:=value` arguments) |
| `$(env NAME [default])` | an environment variable, as set so far by `set_env` |
| `$(find-pkg-share pkg)` | the package's share directory, from the ament index |
| `$(find-pkg-prefix pkg)` | the package's install prefix, from the ament index |
| `$(dirname)` | directory of the launch file being read |
| `$(filename)` | path of the launch file being read |

Every other substitution of ros2 launch (`eval`, `command`, `anon`, ...) is rejected when the
file is read, with an error naming it, rather than being passed through as text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError
from ament_index_python.packages import get_package_prefix
from ament_index_python.packages import get_package_share_directory

from armstack_bringup.errors import LaunchError


@dataclass(frozen=True)
class Call:
    """One `$(name arg ...)`; each argument is itself a substitution string."""

    name: str
    args: tuple[Subst, ...]


Part = str | Call
# A substitution string: literal text and calls, concatenated when performed.
Subst = tuple[Part, ...]

# name -> (min args, max args)
SUPPORTED: dict[str, tuple[int, int]] = {
    "var": (1, 2),
    "env": (1, 2),
    "find-pkg-share": (1, 1),
    "find-pkg-prefix": (1, 1),
    "dirname": (0, 0),
    "filename": (0, 0),
}
# Substitutions ros2 launch (Jazzy) knows but this launcher does not implement.
KNOWN_UNSUPPORTED = frozenset({
    "all", "and", "anon", "any", "command", "equals", "eval", "exec-in-pkg", "file-content",
    "find-exec", "if", "launch_log_dir", "log_dir", "not", "not-equals", "or", "param", "test",
})

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ESCAPED = re.compile(r"\\(.)")


def unescape(text: str) -> str:
    """Drop the backslash of every escape, as the frontend does for literal text."""
    return _ESCAPED.sub(r"\1", text)


class _Reader:
    """Recursive-descent reader over one attribute string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> LaunchError:
        return LaunchError(
            f"invalid substitution syntax in {self.text!r} at {self.pos}: {message}")

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def escaped(self) -> bool:
        # The grammar's look-behind: a character right after a backslash is taken literally.
        return self.pos > 0 and self.text[self.pos - 1] == "\\"

    def at_call(self) -> bool:
        return self.peek() == "$" and self.peek(1) == "(" and not self.escaped()

    def template(self) -> Subst:
        parts: list[Part] = []
        text: list[str] = []
        while self.pos < len(self.text):
            if self.at_call():
                _flush(text, parts)
                parts.append(self.call(quote=None))
            else:
                text.append(self.peek())
                self.pos += 1
        _flush(text, parts)
        return tuple(parts)

    def call(self, quote: str | None) -> Call:
        self.pos += 2  # "$("
        match = _IDENTIFIER.match(self.text, self.pos)
        if match is None:
            raise self.error("expected a substitution name after '$('")
        name = match.group()
        self.pos = match.end()
        args: list[Subst] = []
        while self.peek() == " ":
            self.pos += 1
            args.append(self.value(quote))
        if self.peek() != ")":
            raise self.error(f"expected ')' to close $({name} ...")
        self.pos += 1
        return _checked_call(name, tuple(args))

    def value(self, quote: str | None) -> Subst:
        if quote is None and self.peek() in ("'", '"'):
            return self.quoted(self.peek())
        parts: list[Part] = []
        text: list[str] = []
        while self.pos < len(self.text):
            if self.at_call():
                _flush(text, parts)
                parts.append(self.call(quote))
            elif self.plain_char_allowed(quote):
                text.append(self.peek())
                self.pos += 1
            else:
                break
        _flush(text, parts)
        if not parts:
            raise self.error("empty substitution argument")
        return tuple(parts)

    def plain_char_allowed(self, quote: str | None) -> bool:
        char = self.peek()
        if char == " ":
            return False
        if char in "()":
            return self.escaped()
        if char == "$":
            return self.escaped() or self.peek(1) != "("
        if char in "'\"" and (quote is None or char == quote):
            return self.escaped()
        return True

    def quoted(self, quote: str) -> Subst:
        self.pos += 1
        parts: list[Part] = []
        text: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.error(f"unterminated {quote}-quoted argument")
            if self.peek() == quote and not self.escaped():
                self.pos += 1
                break
            if self.at_call():
                _flush(text, parts)
                parts.append(self.call(quote))
            else:
                text.append(self.peek())
                self.pos += 1
        _flush(text, parts)
        return tuple(parts)


def _flush(text: list[str], parts: list[Part]) -> None:
    if text:
        parts.append(unescape("".join(text)))
        text.clear()


def _checked_call(name: str, args: tuple[Subst, ...]) -> Call:
    if name not in SUPPORTED:
        supported = ", ".join(sorted(SUPPORTED))
        if name in KNOWN_UNSUPPORTED:
            raise LaunchError(
                f"substitution $({name}) is part of ros2 launch but not supported by armstack's "
                f"launcher (supported: {supported})")
        raise LaunchError(f"unknown substitution $({name}) (supported: {supported})")
    low, high = SUPPORTED[name]
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise LaunchError(f"$({name}) takes {expected} argument(s), got {len(args)}")
    return Call(name, args)


def parse_substitution(text: str) -> Subst:
    """Parse one attribute string into literal text and substitution calls."""
    return _Reader(text).template()


def literal(subst: Subst) -> str | None:
    """The text of a substitution string without calls, or None if it has any."""
    if all(isinstance(part, str) for part in subst):
        return "".join(subst)  # type: ignore[arg-type]
    return None


@dataclass
class Scope:
    """What substitutions read: launch configurations, environment, the file being read."""

    configurations: dict[str, str]
    environment: dict[str, str]
    current_file: Path | None = None

    def copy(self) -> Scope:
        return Scope(dict(self.configurations), dict(self.environment), self.current_file)


def perform(subst: Subst, scope: Scope) -> str:
    """Evaluate a substitution string to text."""
    return "".join(part if isinstance(part, str) else _perform_call(part, scope) for part in subst)


def _perform_call(call: Call, scope: Scope) -> str:
    args = [perform(arg, scope) for arg in call.args]
    if call.name == "var":
        if args[0] in scope.configurations:
            return scope.configurations[args[0]]
        if len(args) == 2:
            return args[1]
        raise LaunchError(f"launch configuration '{args[0]}' does not exist")
    if call.name == "env":
        value = scope.environment.get(args[0], args[1] if len(args) == 2 else None)
        if value is None:
            raise LaunchError(f"environment variable '{args[0]}' does not exist")
        return value
    if call.name in ("find-pkg-share", "find-pkg-prefix"):
        lookup = get_package_share_directory if call.name == "find-pkg-share" \
            else get_package_prefix
        try:
            return lookup(args[0])
        except PackageNotFoundError:
            raise LaunchError(
                f"$({call.name} {args[0]}): package '{args[0]}' not found in the ament index "
                "(check AMENT_PREFIX_PATH)") from None
    if scope.current_file is None:
        raise LaunchError(f"$({call.name}) used outside of a launch file")
    if call.name == "dirname":
        return str(scope.current_file.parent)
    return str(scope.current_file)


def split_command_line(text: str) -> list[Subst]:
    """Split a space-separated command line with substitutions into arguments.

    Literal text is split like a shell does (shlex); a substitution sticks to the literal text
    it touches, so `$(find-pkg-share p)/a.yaml --x` gives two arguments, the first one the
    substituted path. A substitution result is never split, as in ros2 launch.
    """
    args: list[Subst] = []
    current: list[Part] = []

    def close() -> None:
        if current:
            args.append(tuple(current))
            current.clear()

    for part in parse_substitution(text):
        if isinstance(part, Call):
            current.append(part)
            continue
        try:
            tokens = shlex.split(part)
        except ValueError as exc:
            raise LaunchError(f"cannot split command line {text!r}: {exc}") from None
        if part[:1].isspace():
            close()
        for index, token in enumerate(tokens):
            if index > 0:
                close()
            current.append(token)
        if part[-1:].isspace():
            close()
    close()
    return args

