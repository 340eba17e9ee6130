"""CLI start-up: `gradbench --help` and `gradbench list tasks|models`, against their goals.

Each command runs as a fresh process (as a user types it), five rounds, median shown
with every round, and CPU seconds (a loaded machine inflates wall time, not CPU time);
`import torch` alone is the yardstick the lazy imports avoid. Goals
(issue 9): `--help` under 0.5 s, `list tasks` under 1.5 s. Also names the task modules
that import torch at their top (each costs every listing the torch import).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

ROUNDS = 5
GOALS = {"--help": 0.5, "list tasks": 1.5}
COMMANDS = {
    "import torch (yardstick)": [sys.executable, "-c", "import torch"],
    "--help": [sys.executable, "-m", "gradbench.cli", "--help"],
    "list tasks": [sys.executable, "-m", "gradbench.cli", "list", "tasks"],
    "list models": [sys.executable, "-m", "gradbench.cli", "list", "models"],
}
# Which module first imports torch during `list tasks` (None: none does).
WHO_IMPORTS_TORCH = """
import builtins, sys
original = builtins.__import__
first = []
def spy(name, globals=None, *args, **kwargs):
    if name.split(".")[0] == "torch" and "torch" not in sys.modules and not first:
        first.append((globals or {}).get("__name__"))
    return original(name, globals, *args, **kwargs)
builtins.__import__ = spy
from gradbench.cli import main
try:
    main(["list", "tasks"])
except SystemExit:
    pass
sys.stderr.write(repr(first[0] if first else None))
"""


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    for command in COMMANDS.values():  # warm the file cache once
        subprocess.run(command, capture_output=True)
    missed = []
    yardstick = None
    for label, command in COMMANDS.items():
        measured = [timed(command) for _ in range(ROUNDS)]
        rounds = [wall for wall, _ in measured]
        median = statistics.median(rounds)
        cpu = statistics.median(c for _, c in measured)
        yardstick = yardstick or median
        goal = GOALS.get(label)
        verdict = ""
        if goal is not None:
            verdict = f"  goal < {goal} s: {'met' if median < goal else 'MISSED'}"
            if median >= goal:
                missed.append(label)
        shown = ", ".join(f"{r:.2f}" for r in rounds)
        print(
            f"  {label:26s} median {median:5.2f} s wall, {cpu:5.2f} s CPU, "
            f"{median / yardstick:4.2f}x import torch  (rounds {shown}){verdict}"
        )
    probe = subprocess.run(
        [sys.executable, "-c", WHO_IMPORTS_TORCH], capture_output=True, text=True
    )
    culprit = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "?"
    print(f"  first module importing torch during `list tasks`: {culprit}")
    if missed:
        print(f"  missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
