"""The speech tasks through the command line (records, leaderboard order, inspect, bad
input) and the Speech Commands layout, built from resampled FSDD clips."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile
import torch
from cli_helpers import cli

from gradbench.errors import DataError
from gradbench.plugins import load_plugins
from gradbench.registry import TASKS
from gradbench.task import DataConfig

SPEAKERS = ("george", "jackson")


def fsdd_source() -> Path:
    value = os.environ.get("GRADBENCH_DATA")
    if not value:
        pytest.skip("GRADBENCH_DATA is not set (point it at the data mirror, e.g. ../shared/data)")
    return Path(value).expanduser() / "fsdd" / "recordings"


def tiny_copy(root: Path) -> Path:
    """2 speakers x 10 digits x takes 0-6, copied (so a test may damage one)."""
    folder = root / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    source = fsdd_source()
    for speaker in SPEAKERS:
        for digit in range(10):
            for take in range(7):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copyfile(source / name, folder / name)
    return root


CONNECTED = [
    "run",
    "speech-connected",
    "-O",
    "digits=2-3",
    "-O",
    "train_size=32",
    "-O",
    "test_size=8",
    "--steps",
    "2",
    "--batch-size",
    "8",
    "--threads",
    "1",
    "--no-download",
]


@pytest.mark.slow
def test_connected_run_records_wer_sorts_by_it_and_inspects_per_frame(capsys, tmp_path: Path):
    data = tiny_copy(tmp_path / "data")
    results = tmp_path / "results"
    args = [*CONNECTED, "-m", "rnn", "-m", "gru", "--match", "params"]
    code, _, err = cli([*args, "--data-dir", str(data), "--results", str(results)], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert [r["model"] for r in records] == ["rnn", "gru"]
    for record in records:
        assert record["primary_metric"] == "test_wer"
        assert record["metric_directions"]["test_wer"] is False
        assert {"test_wer", "test_cer", "test_string_accuracy"} <= set(record["metrics"])
        assert record["dataset"]["name"] == "fsdd-connected"
        assert record["dataset"]["version"].startswith("sha256:")
        assert record["baselines"]["test_wer"] <= 1.0
        assert record["probes"]["timestep_length"] > 100  # frames, not digits
    assert (
        abs(records[0]["parameters"] - records[1]["parameters"]) <= 0.02 * records[0]["parameters"]
    )
    code, out, err = cli(
        ["leaderboard", "--task", "speech-connected", "--results", str(results), "-f", "csv"],
        capsys,
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    wers = [float(row["test_wer_mean"]) for row in rows]
    assert wers == sorted(wers) and len(wers) == 2
    rnn_run = records[0]["run_id"]
    code, out, err = cli(["inspect", rnn_run, "--results", str(results)], capsys)
    assert code == 0, err
    assert "dL/dh_t over T=" in out


@pytest.mark.slow
def test_a_corrupted_wav_is_one_line_naming_it_and_no_record(capsys, tmp_path: Path):
    data = tiny_copy(tmp_path / "data")
    victim = data / "fsdd" / "recordings" / "4_jackson_2.wav"
    victim.write_bytes(victim.read_bytes()[:1000])
    results = tmp_path / "results"
    args = [*CONNECTED, "-m", "rnn", "--data-dir", str(data), "--results", str(results)]
    code, out, err = cli(args, capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "4_jackson_2.wav" in lines[0] and "truncated" in lines[0]
    assert not (results / "runs.jsonl").exists()


@pytest.mark.parametrize(
    ("option", "fragment"),
    [("digits=5-2", "digits='5-2' is reversed"), ("digits=0", "digits='0' is empty")],
)
def test_bad_digits_option_is_one_line(option: str, fragment: str, capsys, tmp_path: Path):
    data = tiny_copy(tmp_path / "data")
    results = tmp_path / "results"
    args = ["run", "speech-connected", "-O", option, "-m", "rnn", "--steps", "1"]
    code, _, err = cli([*args, "--data-dir", str(data), "--results", str(results)], capsys)
    assert code != 0 and fragment in err and len(err.strip().splitlines()) == 1
    assert not (results / "runs.jsonl").exists()


def test_the_three_speech_tasks_are_listed(capsys):
    code, out, err = cli(["list", "tasks"], capsys)
    assert code == 0, err
    for name in ("speech-digits", "speech-connected", "speech-commands"):
        assert name in out


# ---------------------------------------------------------------- Speech Commands layout

WORDS = ("one", "two", "zero")


def speech_commands_layout(root: Path) -> Path:
    """Word folders of 16 kHz clips (FSDD's, resampled), with the two held-out lists."""
    import torchaudio

    source = fsdd_source()
    folder = root / "speech_commands"
    validation, testing = [], []
    for digit, word in ((1, "one"), (2, "two"), (0, "zero")):
        (folder / word).mkdir(parents=True)
        for speaker in SPEAKERS:
            for take in range(4):
                samples, rate = soundfile.read(
                    source / f"{digit}_{speaker}_{take}.wav", dtype="float32"
                )
                resampled = torchaudio.functional.resample(torch.from_numpy(samples), rate, 16000)
                name = f"{speaker}_nohash_{take}.wav"
                soundfile.write(folder / word / name, resampled.numpy(), 16000, subtype="PCM_16")
                if take == 0:
                    validation.append(f"{word}/{name}")
                elif take == 1:
                    testing.append(f"{word}/{name}")
    (folder / "_background_noise_").mkdir()
    (folder / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (folder / "testing_list.txt").write_text("\n".join(testing) + "\n")
    return folder


def test_speech_commands_reads_the_published_layout(tmp_path: Path):
    load_plugins()
    folder = speech_commands_layout(tmp_path / "data")
    config = DataConfig(tmp_path / "data", tmp_path / "cache", download=False)
    task = TASKS.create("speech-commands", data=config)
    assert task.classes == WORDS
    assert {s: task.dataset_id(s).num_examples for s in ("train", "validation", "test")} == {
        "train": 3 * 2 * 2,
        "validation": 3 * 2,
        "test": 3 * 2,
    }
    assert task.metrics[0].name == "test_accuracy"
    # One second at 16 kHz, 10 ms hop: about 100 frames at most (FSDD clips are shorter).
    assert task.input_spec().shape[1] == 40 and task.input_spec().shape[0] <= 101
    batch = next(iter(task.batches("test", 4, 0)))
    assert batch.x.shape[0] == 4 and batch.lengths is not None
    # A clip at the wrong rate is named.
    victim = folder / "two" / "george_nohash_3.wav"
    samples, _ = soundfile.read(victim, dtype="int16")
    soundfile.write(victim, samples, 8000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"george_nohash_3\.wav: sample rate 8000 Hz"):
        TASKS.create("speech-commands", data=config)
    # A list naming a missing clip is named too.
    (folder / "testing_list.txt").write_text("two/nobody.wav\n")
    with pytest.raises(DataError, match="names two/nobody.wav, not found"):
        TASKS.create("speech-commands", data=config)
