"""Two processes appending to one results directory at once leave it whole.

Each writer appends records (some far larger than a pipe buffer or a page, so a
writer that split its line into several writes would interleave with the other) with
their series files. Afterwards every line parses, no record is lost or doubled, and
every series file loads. The lock is ``filelock``'s, which also works on macOS and
Windows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from gradbench.records import ResultsStore

root, name, count, barrier = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
store = ResultsStore(root)
# Both writers begin together: each says it is ready (imports done, which can take
# seconds on a loaded machine), then waits for the other.
(barrier / name).touch()
deadline = time.time() + 60
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.001)
for i in range(count):
    padding = "x" * (200_000 if i % 5 == 0 else 10)
    record = {"schema_version": 1, "run_id": f"{name}{i:06d}", "writer": name, "i": i,
              "padding": padding}
    store.append(record, {"loss": np.full(50, i, dtype=np.float32)})
    # Real runs append seconds apart; a writer that re-took the lock at once would starve
    # the other (filelock polls every 50 ms), and the two would never interleave.
    time.sleep(0.02)
"""

COUNT = 60


def test_two_processes_appending_at_once_leave_every_record_whole(tmp_path: Path) -> None:
    results = tmp_path / "results"
    barrier = tmp_path / "ready"
    barrier.mkdir()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(results), name, str(COUNT), str(barrier)]
        )
        for name in ("aaaaaa", "bbbbbb")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]

    lines = (results / "runs.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline, no torn tail
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 2 * COUNT
    for name in ("aaaaaa", "bbbbbb"):
        mine = [r["i"] for r in records if r["writer"] == name]
        assert mine == list(range(COUNT))  # each writer's records, all, in its order
    writers_seen = [r["writer"] for r in records]
    switches = sum(a != b for a, b in zip(writers_seen, writers_seen[1:], strict=False))
    assert switches > 1, "the writers did not overlap; the test proved nothing"
    for record in records:
        assert len(record["padding"]) == (200_000 if record["i"] % 5 == 0 else 10)
        with np.load(results / record["series_file"], allow_pickle=False) as series:
            assert (series["loss"] == record["i"]).all()
    assert not list((results / "series").glob(".part-*"))
