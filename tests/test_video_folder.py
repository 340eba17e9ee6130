"""Real-video loader on a tiny UCF101/HMDB51 layout whose clips the test encodes with PyAV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="PyAV is in the dev extra; make test installs it")

from gradbench_tasks import video_folder as loader  # noqa: E402
from gradbench_tasks.video_folder import video_folder  # noqa: E402

from gradbench.cli import main  # noqa: E402
from gradbench.data import data_config  # noqa: E402
from gradbench.errors import DataError, UsageError  # noqa: E402

CLASSES = ("Bright", "Dark")
FRAMES = 5


def write_clip(path: Path, base: int, frames: int = FRAMES) -> None:
    """An MPEG-4 AVI of ``frames`` flat grey frames, brightening by 20 a frame from ``base``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(frames):
            pixels = np.full((24, 32, 3), base + 20 * index, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def ucf(tmp_path: Path) -> Path:
    """Two classes, three clips each (two train, one test), official split file formats."""
    root = tmp_path / "UCF-101"
    train, test = [], []
    for label, name in enumerate(CLASSES, start=1):
        for group in range(1, 4):
            relative = f"{name}/v_{name}_g0{group}_c01.avi"
            write_clip(root / relative, base=140 if name == "Bright" else 10)
            (test if group == 1 else train).append((relative, label))
    splits = root / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CLASSES, 1)))
    (splits / "trainlist01.txt").write_text("".join(f"{r} {label}\n" for r, label in train))
    (splits / "testlist01.txt").write_text("".join(f"{r}\n" for r, _ in test))
    return root


def load(root: Path, tmp_path: Path, **options):
    return video_folder(data_config(None, tmp_path / "cache"), root=str(root), **options)


def test_clips_are_decoded_sampled_resized_and_labelled(ucf: Path, tmp_path: Path) -> None:
    task = load(ucf, tmp_path, frames=3, size=8)
    clips, labels = task.splits["train"]
    assert clips.shape == (4, 3, 3, 8, 8) and clips.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1, 1] and task.splits["test"][1].tolist() == [0, 1]
    assert task.input_spec().kind == "video" and task.input_spec().num_outputs == 2
    brightness = clips.float().mean(dim=(2, 3, 4))  # (clips, frames)
    # Frames 0, 2 and 4 of five, evenly spaced: 40 brighter at each pick (codec noise aside).
    steps = brightness[:, 1:] - brightness[:, :-1]
    assert ((steps > 30) & (steps < 50)).all()
    assert brightness[labels == 0].mean() > brightness[labels == 1].mean() + 100
    batch = next(task.batches("train", 2, seed=0))
    assert batch.x.shape == (2, 3, 3, 8, 8) and batch.x.dtype == torch.float32
    assert task.baselines["test_accuracy (chance)"] == 0.5
    identity = task.dataset_id("train")
    assert identity.name == "UCF-101" and identity.split == "train1"
    assert identity.version.startswith("list:") and identity.details["layout"] == "ucf101"
    # More frames than the clip has: some are repeated, none invented.
    long = load(ucf, tmp_path, frames=8, size=8, grayscale=True)
    assert long.splits["train"][0].shape == (4, 8, 1, 8, 8)


def test_decoded_clips_are_cached(ucf: Path, tmp_path: Path, monkeypatch) -> None:
    first = load(ucf, tmp_path, frames=3, size=8)
    monkeypatch.setattr(loader, "decode_clip", lambda *a, **k: pytest.fail("decoded again"))
    again = load(ucf, tmp_path, frames=3, size=8)
    assert torch.equal(first.splits["train"][0], again.splits["train"][0])
    assert first.version == again.version
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        load(ucf, tmp_path, frames=4, size=8)  # other sampling: another cache entry


def test_the_hmdb51_layout(tmp_path: Path) -> None:
    root = tmp_path / "hmdb51"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for index, name in enumerate(("brush_hair", "cartwheel")):
        lines = []
        for clip, role in (("a", 1), ("b", 2), ("c", 0)):
            write_clip(root / name / f"{clip}.avi", base=30 + 100 * index, frames=3)
            lines.append(f"{clip}.avi {role} \n")
        (splits / f"{name}_test_split1.txt").write_text("".join(lines))
    task = load(root, tmp_path, frames=2, size=4)
    assert task.classes == ("brush_hair", "cartwheel")
    assert task.splits["train"][1].tolist() == [0, 1] and task.splits["test"][1].tolist() == [0, 1]
    assert task.dataset_id("test").details["layout"] == "hmdb51"


def test_a_folder_without_split_files_names_it(ucf: Path, tmp_path: Path) -> None:
    for path in (ucf / "ucfTrainTestlist").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="no split files for split 1 in .*ucfTrainTestlist"):
        load(ucf, tmp_path)
    with pytest.raises(UsageError, match="needs -O root=DIR"):
        video_folder(data_config(None, tmp_path / "cache"))


def test_an_undecodable_or_missing_clip_is_named(ucf: Path, tmp_path: Path) -> None:
    broken = ucf / "Dark" / "v_Dark_g02_c01.avi"
    broken.write_bytes(b"this is not a video" * 50)
    with pytest.raises(DataError, match=r"cannot decode .*v_Dark_g02_c01\.avi"):
        load(ucf, tmp_path, frames=2, size=4)
    broken.unlink()
    with pytest.raises(DataError, match=r"v_Dark_g02_c01\.avi is listed .* but missing"):
        load(ucf, tmp_path, frames=2, size=4)


@pytest.mark.slow
def test_the_command_line_trains_on_it_and_refuses_bad_input(
    ucf: Path, tmp_path: Path, capsys
) -> None:
    results = tmp_path / "results"
    base = ["run", "video-folder", "-O", f"root={ucf}", "-O", "frames=4", "-O", "size=8"]
    base += ["--cache-dir", str(tmp_path / "cache"), "--results", str(results)]
    with pytest.raises(SystemExit) as stopped:
        main(
            base
            + ["-m", "plain3d-8", "-m", "lstm", "--width", "2", "--steps", "2", "--batch-size", "2"]
        )
    assert stopped.value.code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert [r["model"] for r in records] == ["plain3d-8", "lstm"]
    assert records[0]["dataset"]["name"] == "UCF-101" and records[0]["flops_per_step"] > 0
    capsys.readouterr()
    # Bad input: one line naming the problem, a non-zero exit, no new record. (A changed
    # file has another size and time: the cache does not hide it.)
    (ucf / "Bright" / "v_Bright_g02_c01.avi").write_bytes(b"garbage" * 100)
    with pytest.raises(SystemExit) as stopped:
        main(base + ["-m", "plain3d-8", "--steps", "1", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert stopped.value.code != 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "v_Bright_g02_c01.avi" in lines[0]
    assert len((results / "runs.jsonl").read_text().splitlines()) == 2


def test_list_tasks_shows_video_folder(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["list", "tasks"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "video-folder" in out and "video" in out
