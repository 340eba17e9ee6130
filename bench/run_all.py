"""`make bench`: run every benchmark script in bench/ in turn and summarise.

Each script prints its own side-by-side ratios; this runner only sequences them (never
in parallel: they would disturb each other's timings) and fails if one fails.
``--skip NAME`` leaves a script out (``--skip suite_time``: the quick suite's minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark in bench/.")
    parser.add_argument("--skip", action="append", default=[], help="Script name to leave out.")
    skip = {name.removesuffix(".py") for name in parser.parse_args().skip}
    scripts = sorted(
        p
        for p in HERE.glob("*.py")
        # "_cases.py" and the like are helpers the benchmarks import, not benchmarks.
        if p.name != Path(__file__).name and p.stem not in skip and not p.name.startswith("_")
    )
    # The quick suite's wall time takes minutes: last, so the short figures come first.
    scripts.sort(key=lambda p: p.stem == "suite_time")
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)])
        print(f"   ({script.name}: exit {code}, {time.perf_counter() - started:.0f} s)", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
