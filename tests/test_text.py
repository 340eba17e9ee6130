"""SST-2 loading (the mirror's files and a tiny generated TSV), vocabulary, padding, caching."""

from __future__ import annotations

import os
from pathlib import Path

import gradbench_tasks.text as text
import pytest
import torch

from gradbench.config import TrainConfig
from gradbench.errors import DataError
from gradbench.models.build import build_model, model_options
from gradbench.plugins import load_plugins
from gradbench.registry import TASKS
from gradbench.task import DataConfig, Task
from gradbench.train import train

TRAIN = [
    (1, 'a "great" film'),  # quotes must survive: SST-2 has them
    (0, "a dull film , dull"),
    (1, "great great fun"),
    (0, "null"),  # a word, not a missing value
    (1, "rare-word film"),
    (0, "dull"),
]
DEV = [(1, "great film"), (0, "dull unseen film")]
TEST = [(0, "a dull dull dull film ."), (1, "GREAT")]


def write_sst2(root: Path) -> Path:
    folder = root / "sst2"
    folder.mkdir(parents=True)
    # The mirror's headers: train names its text column "sentence", dev and test "content".
    for split, column, rows in (
        ("train", "sentence", TRAIN),
        ("dev", "content", DEV),
        ("test", "content", TEST),
    ):
        lines = [f"label\t{column}"] + [f"{label}\t{sentence}" for label, sentence in rows]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def tiny(tmp_path) -> DataConfig:
    return DataConfig(write_sst2(tmp_path / "data"), tmp_path / "cache", download=False)


def test_tiny_tsv_gives_vocabulary_ids_lengths_and_labels(tiny):
    task = TASKS.create("text", data=tiny, min_freq=2)
    assert isinstance(task, Task)
    assert task.vocab[:2] == ["<pad>", "<unk>"]
    # Seen twice or more in train: dull 3, film 3, a 2, great 2 ('"great"' is another
    # token); ties in alphabetical order; the rest are <unk>.
    assert task.vocab[2:] == ["dull", "film", "a", "great"]
    index = {t: i for i, t in enumerate(task.vocab)}
    padded, lengths, labels = task.splits["train"]
    assert labels.tolist() == [label for label, _ in TRAIN]
    assert lengths.tolist() == [3, 5, 3, 1, 2, 1]
    assert padded[0, :3].tolist() == [index["a"], text.UNK, index["film"]]  # '"great"' is one token
    assert padded[3, 0] == text.UNK  # "null" read as a word
    assert bool((padded[0, 3:] == text.PAD).all())
    dev_ids = task.splits["dev"][0][1, :3].tolist()
    assert dev_ids == [index["dull"], text.UNK, index["film"]]
    assert task.splits["test"][0][1, 0] == index["great"]  # lowercased
    spec = task.input_spec()
    assert spec.kind == "tokens" and spec.vocab_size == 6 and spec.pad_index == 0
    assert task.dataset_id("train").source == "local"
    assert task.dataset_id("train").version.startswith("sha256:")


def test_truncation_and_character_level(tiny):
    task = TASKS.create("text", data=tiny, max_length=2)
    assert task.splits["train"][1].max() == 2 and task.splits["test"][0].shape[1] == 2
    chars = TASKS.create("text-char", data=tiny)
    assert "<pad>" == chars.vocab[0] and set(chars.vocab[2:]) >= set("a great film")
    assert chars.splits["train"][1].tolist() == [len(s) for _, s in TRAIN]
    assert chars.input_spec().shape == (256,)


def test_batches_pad_to_the_longest_sample_and_train_drops_the_ragged_tail(tiny):
    task = TASKS.create("text", data=tiny)
    train_batches = list(task.batches("train", 4, seed=0))
    assert len(train_batches) == 1 and len(train_batches[0]) == 4
    batch = train_batches[0]
    assert batch.x.dtype == torch.long and batch.x.shape[1] == int(batch.lengths.max())
    for row, length in enumerate(batch.lengths.tolist()):
        assert bool((batch.x[row, length:] == text.PAD).all())
        assert bool((batch.x[row, :length] != text.PAD).all())
    dev = list(task.batches("dev", 1, seed=0))
    assert [b.lengths.item() for b in dev] == [2, 3]


def test_padded_batch_gives_the_same_logits_as_each_sentence_alone(tiny):
    task = TASKS.create("text", data=tiny)
    batch = next(task.batches("test", 2, seed=0))
    assert batch.lengths.tolist() == [6, 1]
    for name in ("rnn", "lstm", "gru", "transformer"):
        torch.manual_seed(0)
        model = build_model(
            name, task.input_spec(), {**model_options(name, "tokens"), "width": 8}
        ).eval()
        with torch.no_grad():
            together = model(batch.x, batch.lengths)
            for row in range(2):
                length = int(batch.lengths[row])
                alone = model(batch.x[row : row + 1, :length], batch.lengths[row : row + 1])
                torch.testing.assert_close(together[row : row + 1], alone, atol=1e-5, rtol=1e-5)


def test_preprocessing_is_cached_and_reused(tiny, monkeypatch):
    first = TASKS.create("text", data=tiny)
    assert not first.cache_hit
    assert list((tiny.cache_dir / "sst2").glob("word-*.pt"))

    def unreadable(*args, **kwargs):
        raise AssertionError("the TSV files were read again despite the cache")

    monkeypatch.setattr(text, "read_local", unreadable)
    second = TASKS.create("text", data=tiny)
    assert second.cache_hit
    assert second.vocab == first.vocab
    for split in ("train", "dev", "test"):
        for a, b in zip(first.splits[split], second.splits[split], strict=True):
            assert torch.equal(a, b)
    # Other options are another cache entry, not a stale hit.
    monkeypatch.undo()
    other = TASKS.create("text", data=tiny, min_freq=1)
    assert not other.cache_hit and len(other.vocab) > len(first.vocab)


def test_missing_data_without_downloads_is_a_data_error(tmp_path):
    data = DataConfig(tmp_path, tmp_path / "cache", download=False)
    with pytest.raises(DataError, match="sst2"):
        TASKS.create("text", data=data)


def test_evaluate_reports_accuracy_and_macro_f1_on_dev_and_test(tiny):
    task = TASKS.create("text", data=tiny)
    assert task.eval_splits == ("dev", "test")
    assert task.metrics[0].name == "dev_accuracy"
    torch.manual_seed(0)
    model = build_model("gru", task.input_spec(), {**model_options("gru", "tokens"), "width": 8})
    config = TrainConfig(steps=3, optimizer="adam", lr=1e-2, batch_size=2, device="cpu")
    result = train(task, model, config, seed=0)
    assert set(result.metrics) == {m.name for m in task.metrics}
    assert all(0.0 <= result.metrics[f"{s}_accuracy"] <= 1.0 for s in ("dev", "test"))
    # Majority class of train (1: 3 of 6, ties go to the lower id 0) scored on dev and test.
    assert task.baselines == {"dev_accuracy": 0.5, "test_accuracy": 0.5}


def test_macro_f1():
    predictions = torch.tensor([1, 1, 0, 0, 1])
    labels = torch.tensor([1, 0, 0, 0, 1])
    # Class 1: P 2/3, R 1 -> 0.8; class 0: P 1, R 2/3 -> 0.8.
    assert text.macro_f1(predictions, labels, 2) == pytest.approx(0.8)
    assert (
        text.macro_f1(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2) == 0.5
    )


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> DataConfig:
    root = os.environ.get("GRADBENCH_DATA")
    if not root:
        pytest.skip("GRADBENCH_DATA is not set: no SST-2 files to read")
    return DataConfig(Path(root), tmp_path_factory.mktemp("cache"), download=False)


def test_mirror_files_load_with_their_published_sizes(mirror):
    load_plugins()
    task = TASKS.create("sst2", data=mirror)
    sizes = {split: len(task.splits[split][2]) for split in ("train", "dev", "test")}
    assert sizes == {"train": 67_349, "dev": 872, "test": 1_821}
    assert task.dataset_id("dev").num_examples == 872
    assert 10_000 < len(task.vocab) < 20_000
    # Balanced labels: majority-class accuracy near one half on dev and test.
    assert 0.45 < task.baselines["dev_accuracy"] < 0.55
    batch = task.fake_batch(8)
    assert batch.x.shape[0] == 8 and batch.x.shape[1] == int(batch.lengths.max())


def test_sst2_labels_outside_the_two_classes_name_the_file_and_line(tmp_path):
    root = write_sst2(tmp_path / "data")
    train = root / "sst2" / "train.tsv"
    lines = train.read_text().splitlines()
    lines[3] = "7\tseven is not a class"
    train.write_text("\n".join(lines) + "\n")
    data = DataConfig(root, tmp_path / "cache", download=False)
    with pytest.raises(DataError, match=r"train\.tsv:4: label 7 is not 0 or 1"):
        TASKS.create("text", data=data)


def test_a_text_task_from_files_carries_its_own_name(tmp_path):
    from gradbench.classification import text_classification_from_files

    files = {}
    for split, rows in (("train", TRAIN), ("test", TEST)):
        files[split] = tmp_path / f"{split}.tsv"
        files[split].write_text("".join(f"{label}\t{s}\n" for label, s in rows))
    task = text_classification_from_files("reviews", files, min_freq=2)
    assert isinstance(task, Task)
    assert task.dataset_id("train").name == "reviews" and task.eval_splits == ("test",)
    assert task.metrics[0].name == "test_accuracy" and task.num_classes == 2
    task.eval_limit = 1
    assert task.dataset_id("test").split == "test[:1]"
    assert sum(len(b) for b in task.batches("test", 4, 0)) == 1
    files["test"].write_text("1\tfine\n3\tthree classes?\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: label 3 is outside the task's 2 classes"):
        text_classification_from_files("reviews", files)
    files["test"].write_text("1\tfine\tand more\n")
    with pytest.raises(DataError, match=r"test\.tsv:1: expected label<TAB>text"):
        text_classification_from_files("reviews", files)


def test_the_hub_copy_is_read_at_the_pinned_revision_and_checked(tmp_path, monkeypatch):
    """No network here: a stand-in for datasets.load_dataset records what was asked for
    and serves tables of the published sizes (and then one short of them)."""
    import datasets

    asked = []

    def fake_load(name, **kwargs):
        asked.append((name, kwargs.get("revision")))
        sizes = {"train": 67_349, "validation": 872 - len(asked) + 1, "test": 1_821}
        return {
            split: datasets.Dataset.from_dict(
                # GLUE hides the test labels as -1, as on the Hub.
                {
                    "idx": list(range(n)),
                    "sentence": ["a film"] * n,
                    "label": [-1 if split == "test" else 1] * n,
                }
            )
            for split, n in sizes.items()
        }

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    texts = text.read_hub(tmp_path)
    assert asked == [(text.HUB_NAME, text.HUB_REVISION)]
    assert len(text.HUB_REVISION) == 40 and set(text.HUB_REVISION) <= set("0123456789abcdef")
    assert {split: len(texts[split][0]) for split in ("train", "dev")} == text.HUB_SPLIT_SIZES
    with pytest.raises(DataError, match="not the published"):
        text.read_hub(tmp_path)  # 871 dev examples: not SST-2 as published
