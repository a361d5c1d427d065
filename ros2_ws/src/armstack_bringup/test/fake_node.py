"""A stand-in process for the runner tests; records what happens to it in a file.

    fake_node.py <behaviour> <record file> [exit code] [delay s]

Behaviours:
  exit      after the delay print a stdout, a stderr and an unterminated line, exit with the code
  polite    exit 0 on SIGINT
  stubborn  ignore SIGINT, exit 0 on SIGTERM
  deaf      ignore SIGINT and SIGTERM (only SIGKILL ends it)
  spawner   start a `sleep` grandchild deaf to SIGINT/SIGTERM, record its pid, exit 0 on SIGINT
            leaving it behind

Each line of the record file is "<event> <pid>": start, SIGINT, SIGTERM, grandchild.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def ignore_shutdown_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def main() -> None:
    behaviour, record = sys.argv[1], Path(sys.argv[2])

    def note(event: str, pid: int | None = None) -> None:
        with record.open("a") as handle:
            handle.write(f"{event} {os.getpid() if pid is None else pid}\n")

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        note(name)
        stops = {("polite", "SIGINT"), ("stubborn", "SIGTERM"), ("spawner", "SIGINT")}
        if (behaviour, name) in stops:
            sys.exit(0)

    if behaviour == "exit":
        note("start")
        time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        sys.stdout.write("unterminated")
        sys.exit(int(sys.argv[3]))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    if behaviour == "spawner":
        # The grandchild ignores SIGINT and SIGTERM (kept across exec): only the launcher's
        # SIGKILL of the group's leftovers can end it.
        grandchild = subprocess.Popen(["sleep", "60"], preexec_fn=ignore_shutdown_signals)
        note("grandchild", grandchild.pid)
    note("start")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
