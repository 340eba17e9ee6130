"""Wall time of `gradbench suite quick` from scratch: the README's "at most 10 minutes on 2
CPU cores".

Runs the whole quick suite once into a fresh results directory, pinned to two cores
(where the machine has more), and prints the wall time beside the training time the
records report (evaluation, data loading and start-up make the difference) and the load
average, since a shared machine's neighbours slow it down. Slow (minutes): `make bench`
runs it last; `python bench/run_all.py --skip suite_time` leaves it out.

    python bench/suite_time.py [--suite quick] [--budget 600]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--budget", type=float, default=600.0, help="Seconds it should take.")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 2:
        os.sched_setaffinity(0, cores[:2])  # the children inherit it
    env = os.environ | {"OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory(prefix="gradbench-suite-time-") as folder:
        command = [sys.executable, "-m", "gradbench.cli", "suite", args.suite, "--results", folder]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        code = subprocess.call(command, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()[0]
        runs = Path(folder, "runs.jsonl")
        records = (
            [json.loads(line) for line in runs.read_text().splitlines()] if runs.exists() else []
        )
    if code:
        print(f"suite {args.suite} failed (exit {code})", file=sys.stderr)
        return code
    train = sum(r["train_seconds"] for r in records)
    evaluation = sum(r.get("eval_seconds") or 0 for r in records)
    verdict = "within" if wall <= args.budget else "OVER"
    print(
        f"suite {args.suite}: {len(records)} runs, wall {wall:.0f} s "
        f"({wall / 60:.1f} min, {verdict} the {args.budget / 60:.0f}-minute budget) on "
        f"{min(2, len(cores))} cores; training {train:.0f} s, evaluation {evaluation:.0f} s, "
        f"the rest start-up and data; load average {load_before:.1f} -> {load_after:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
