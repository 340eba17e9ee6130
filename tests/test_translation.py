"""The translation task: Multi30k files, BPE caching, bucketed batches, metrics, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import gradbench_tasks.translation as translation
import pytest
import torch

from gradbench.cli import main
from gradbench.errors import DataError, UsageError
from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.plugins import load_plugins
from gradbench.registry import TASKS
from gradbench.task import DataConfig, Task

WORDS = "ein mann hund frau kind läuft sitzt auf dem rot blau grünen ball wiese straße".split()
ENGLISH = "a man dog woman child runs sits on the red blue green ball meadow street".split()


def sentences(count: int, seed: int, words: list[str]) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        length = int(torch.randint(2, 9, (1,), generator=generator))
        index = torch.randint(0, len(words), (length,), generator=generator).tolist()
        out.append(" ".join(words[i] for i in index) + ".")
    return out


def write_corpus(root: Path, *, copy_target: bool = False, sizes=(96, 12, 10)) -> Path:
    """A tiny Multi30k in the mirror's layout: de, en (a word-for-word gloss) and fr."""
    folder = root / "multi30k" / "data" / "task1" / "raw"
    folder.mkdir(parents=True)
    for (split, stem), size in zip(translation.SPLIT_FILES.items(), sizes, strict=True):
        german = sentences(size, hash(split) % 1000, WORDS)
        gloss = dict(zip(WORDS, ENGLISH, strict=True))
        english = (
            german
            if copy_target
            else [" ".join(gloss[w.rstrip(".")] for w in s.split()) + "." for s in german]
        )
        for lang, lines in (("de", german), ("en", english), ("fr", english)):
            with gzip.open(folder / f"{stem}.{lang}.gz", "wt", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
    return root


def load(root: Path | None, cache: Path, download: bool = False, **options) -> Task:
    load_plugins()
    data = DataConfig(data_dir=root, cache_dir=cache, download=download)
    return TASKS.create("translation", data=data, **{"vocab_size": 64, **options})


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "data")


def test_batches_are_teacher_forced_pairs(corpus: Path, tmp_path: Path) -> None:
    task = load(corpus, tmp_path / "cache")
    spec = task.input_spec()
    assert spec.kind == "seq2seq" and spec.num_outputs == spec.vocab_size == 64
    batch = next(task.batches("val", 5, 0))
    x, y, lengths = batch.x, batch.y, batch.lengths
    assert x.shape[2] == 2 and y.shape == x.shape[:2]
    rows = torch.arange(len(batch))
    assert (x[rows, lengths - 1, 0] == translation.EOS).all()  # sources end in EOS
    assert (x[:, 0, 1] == translation.BOS).all()
    target_length = (x[..., 1] != translation.PAD).sum(1)  # BOS + target
    assert (y[rows, target_length - 1] == translation.EOS).all()
    for i in range(len(batch)):  # the decoder reads what it must predict, one step late
        n = int(target_length[i])
        assert torch.equal(x[i, 1:n, 1], y[i, : n - 1])
        assert (y[i, n:] == translation.PAD).all()
    detok = task.tgt_tok.decode(y[0, : int(target_length[0]) - 1].tolist())
    assert detok in task.texts["val"][1]


def test_training_batches_are_bucketed_full_and_cover_the_epoch(
    corpus: Path, tmp_path: Path
) -> None:
    task = load(corpus, tmp_path / "cache")
    first = list(task.batches("train", 8, seed=3))
    assert len(first) == 96 // 8 and all(len(b) == 8 for b in first)
    again = list(task.batches("train", 8, seed=3))
    assert all(torch.equal(a.x, b.x) for a, b in zip(first, again, strict=True))
    other = list(task.batches("train", 8, seed=4))
    assert not all(torch.equal(a.x, b.x) for a, b in zip(first, other, strict=True))
    # Sorted within pools: far less padding than random batches of the same data.
    padding = sum(int((b.x[..., 0] == 0).sum()) for b in first)
    total_len = task.splits["train"][1]
    shuffled = torch.randperm(96, generator=torch.Generator().manual_seed(0)).split(8)
    random_padding = sum(int((total_len[i].max() - total_len[i]).sum()) for i in shuffled)
    assert padding < random_padding
    seen = sorted(tuple(row.tolist()) for b in first for row in b.x[..., 0] if True)
    assert len(seen) == 96


def test_tokenizer_and_ids_are_cached_by_content_and_options(corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    task = load(corpus, cache)
    files = sorted(p.name for p in (cache / "multi30k").iterdir())
    assert len(files) == 3  # source and target tokenizers, ids
    again = load(corpus, cache)
    assert sorted(p.name for p in (cache / "multi30k").iterdir()) == files
    assert torch.equal(again.splits["train"][0], task.splits["train"][0])
    load(corpus, cache, vocab_size=80)
    assert len(list((cache / "multi30k").iterdir())) == 6
    # Shared vocabulary: one tokenizer for both sides.
    shared = load(corpus, cache, shared_vocab="true")
    assert shared.src_tok is shared.tgt_tok


def test_dataset_id_carries_pair_version_subset_and_signatures(
    corpus: Path, tmp_path: Path
) -> None:
    task = load(corpus, tmp_path / "cache", eval_limit=4, src="fr", tgt="de")
    train, test = task.dataset_id("train"), task.dataset_id("test")
    assert train.name == "multi30k-fr-de" and train.split == "train"
    assert train.version.startswith("sha256:") and train.source == "local"
    assert train.details["pair"] == "fr-de" and train.details["matches_upstream"] is False
    assert test.split == "test_2016_flickr[:4]" and test.num_examples == 4
    assert test.details["sacrebleu"]["bleu"].startswith("nrefs:1|case:mixed|")
    assert "tok:13a" in test.details["sacrebleu"]["bleu"]
    assert sum(test.details["bucket_sizes"].values()) == 4


def test_an_eval_limit_set_after_loading_limits_scoring_buckets_and_baselines(
    corpus: Path, tmp_path: Path
) -> None:
    """--eval-limit reaches a loaded task through plan.apply_eval_limit (in the driver and
    in every worker); on translation it must mean what -O eval_limit means."""
    from gradbench.plan import apply_eval_limit

    limited = load(corpus, tmp_path / "cache", eval_limit=4)
    task = load(corpus, tmp_path / "cache")
    assert task.test_count > 4
    apply_eval_limit(task, 4)
    assert task.test_count == 4 and task.eval_limit == 4
    assert task.dataset_id("test") == limited.dataset_id("test")
    assert task.baselines == limited.baselines
    assert sum(task.dataset_id("test").details["bucket_sizes"].values()) == 4


def test_copying_the_source_scores_100_when_source_and_target_agree(tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "data", copy_target=True)
    task = load(root, tmp_path / "cache")
    assert task.baselines["test_bleu"] == pytest.approx(100.0)
    other = load(write_corpus(tmp_path / "other"), tmp_path / "cache")
    assert other.baselines["test_bleu"] < 50.0


def test_evaluate_decodes_and_scores(corpus: Path, tmp_path: Path) -> None:
    task = load(corpus, tmp_path / "cache", eval_limit=6, beam=2)
    options = resolve_options(ModelSpec("gru", {"width": 8, "embed_dim": 8}), {}, "seq2seq")
    torch.manual_seed(0)
    model = build_model("gru", task.input_spec(), options).eval()
    with torch.no_grad():
        metrics = task.evaluate(model, torch.device("cpu"), 16)
    for name in ("test_bleu", "test_chrf", "val_loss", "val_ppl"):
        assert name in metrics
    assert metrics["val_ppl"] == pytest.approx(torch.tensor(metrics["val_loss"]).exp().item())
    assert 0.0 <= metrics["test_bleu"] <= 100.0
    assert any(k.startswith("test_bleu_len_") for k in metrics)
    hypotheses = task.translate(model, torch.device("cpu"), 16)
    assert len(hypotheses) == 6 and all(isinstance(h, str) for h in hypotheses)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"src": "xx"}, "not a Multi30k language"),
        ({"tgt": "de"}, "both 'de'"),
        ({"beam": 0}, "beam must be >= 1"),
        ({"beam": "four"}, "is not a number"),
        ({"eval_limit": 0}, "eval_limit must be >= 1"),
    ],
)
def test_bad_options_are_usage_errors(corpus: Path, tmp_path: Path, options, fragment) -> None:
    with pytest.raises(UsageError, match=fragment):
        load(corpus, tmp_path / "cache", **options)


def _shorten(path: Path) -> None:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines[:-1]) + "\n")


def test_misaligned_and_empty_files_are_data_errors(corpus: Path, tmp_path: Path) -> None:
    raw = corpus / "multi30k" / "data" / "task1" / "raw"
    _shorten(raw / "train.en.gz")
    with pytest.raises(DataError, match="train.de.gz has 96 lines but train.en.gz has 95"):
        load(corpus, tmp_path / "cache")
    with gzip.open(raw / "val.de.gz", "wt", encoding="utf-8"):
        pass
    with pytest.raises(DataError, match="the val split is empty"):
        load(corpus, tmp_path / "cache", tgt="fr")


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


@pytest.mark.parametrize(
    ("damage", "options", "code", "fragment"),
    [
        ("shorten", [], 1, "parallel files must align"),
        ("empty", [], 1, "the test split is empty"),
        (None, ["-O", "src=klingon"], 2, "not a Multi30k language"),
        (None, ["-O", "beam=0"], 2, "beam must be >= 1"),
    ],
)
def test_bad_input_on_the_command_line_is_one_line_and_no_record(
    corpus: Path, tmp_path: Path, capsys, damage, options, code, fragment
) -> None:
    raw = corpus / "multi30k" / "data" / "task1" / "raw"
    if damage == "shorten":
        _shorten(raw / "val.en.gz")
    elif damage == "empty":
        with gzip.open(raw / "test_2016_flickr.de.gz", "wt", encoding="utf-8"):
            pass
    results = tmp_path / "results"
    args = ["run", "translation", "-m", "gru:width=8", "--steps", "1", "--no-download"]
    args += ["--data-dir", str(corpus), "--results", str(results), *options]
    status, _, err = _cli(args, capsys)
    assert status == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err
    assert not (results / "runs.jsonl").exists()


def test_download_is_verified_against_the_pinned_checksums(
    corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    # A local "upstream": file:// URLs, the pinned table replaced by the fake files' hashes.
    upstream = corpus / "multi30k" / "data" / "task1" / "raw"
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in upstream.iterdir()}
    monkeypatch.setattr(translation, "URL_TEMPLATES", (upstream.as_uri() + "/{name}",))
    monkeypatch.setattr(translation, "SHA256", sums)
    cache = tmp_path / "cache"
    task = load(None, cache, download=True)
    assert task.dataset_id("train").source == "download"
    assert task.dataset_id("train").details["matches_upstream"] is True
    assert (cache / "downloads" / "multi30k" / "train.de.gz").is_file()
    # A tampered upstream file is refused, and nothing is kept.
    shutil.rmtree(cache / "downloads")
    monkeypatch.setattr(translation, "SHA256", {**sums, "val.en.gz": "0" * 64})
    with pytest.raises(DataError, match="corrupt"):
        load(None, cache, download=True)
    assert not (cache / "downloads" / "multi30k" / "val.en.gz").exists()
    with pytest.raises(DataError, match="downloads are off"):
        load(None, tmp_path / "empty-cache", download=False)


@pytest.mark.slow
def test_end_to_end_records_leaderboard_and_inspect(corpus: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    args = ["run", "translation", "-m", "gru:width=8,embed_dim=8"]
    args += ["-m", "gru:attention=additive,embed_dim=8", "-m", "transformer:embed_dim=8"]
    # Tiny models' parameter counts move by a few % per width step: a wider tolerance.
    args += ["--match", "params", "--tolerance", "0.1", "--steps", "4", "--batch-size", "8"]
    args += ["--threads", "1"]
    args += ["-O", "vocab_size=64", "-O", "eval_limit=5", "--no-download"]
    args += ["--data-dir", str(corpus), "--results", str(results)]
    status, out, err = _cli(args, capsys)
    assert status == 0, err
    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert [r["model_label"] for r in records] == [
        "gru:embed_dim=8,width=8",
        "gru:attention=additive,embed_dim=8",
        "transformer:embed_dim=8",
    ]
    for record in records:
        assert {"test_bleu", "test_chrf", "val_loss", "val_ppl"} <= set(record["metrics"])
        test = record["dataset"]["eval"][1]
        assert test["split"] == "test_2016_flickr[:5]"
        assert test["details"]["sacrebleu"]["chrf"].startswith("nrefs:1|")
        assert record["budget"]["match_within_tolerance"], record["budget"]
        assert record["flops_per_step"] > 0
    assert "test_bleu" in out and "baselines" in out
    status, out, _ = _cli(["inspect", records[0]["run_id"], "--results", str(results)], capsys)
    assert status == 0
    assert "dL/dh_t over T=" in out


@pytest.mark.slow
def test_the_real_multi30k_pair(data_dir: Path, tmp_path: Path, capsys) -> None:
    task = load(data_dir, tmp_path / "cache", vocab_size=8000, eval_limit=10)
    assert [len(task.splits[s][1]) for s in ("train", "val", "test")] == [29000, 1014, 1000]
    train = task.dataset_id("train")
    assert train.name == "multi30k-de-en" and train.source == "local"
    assert train.details["matches_upstream"] is True
    assert task.src_tok.get_vocab_size() == task.tgt_tok.get_vocab_size() == 8000
    # BPE on raw text decodes back to it (NFKC aside): what sacreBLEU scores.
    references = task.texts["test"][1][:10]
    ids = [task.splits["test"][2][i, : task.splits["test"][3][i]].tolist() for i in range(10)]
    assert task.tgt_tok.decode_batch(ids) == references
    # A copy of the mirror with one file shortened by a line: one line, no record.
    raw = data_dir / "multi30k" / "data" / "task1" / "raw"
    copy = tmp_path / "copy" / "multi30k" / "data" / "task1" / "raw"
    copy.mkdir(parents=True)
    for stem in translation.SPLIT_FILES.values():
        for lang in ("de", "en"):
            shutil.copyfile(raw / f"{stem}.{lang}.gz", copy / f"{stem}.{lang}.gz")
    _shorten(copy / "train.de.gz")
    results = tmp_path / "results"
    args = ["run", "translation", "-m", "gru", "--steps", "1", "--no-download"]
    status, _, err = _cli(
        args + ["--data-dir", str(tmp_path / "copy"), "--results", str(results)], capsys
    )
    assert status == 1
    assert err.strip() == (
        "gradbench: error: multi30k: train.de.gz has 28,999 lines but train.en.gz has "
        "29,000: parallel files must align"
    )
    assert not (results / "runs.jsonl").exists()
