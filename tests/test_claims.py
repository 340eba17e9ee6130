"""Claims: parsing with file and line, paired judgement, the built-in article claims."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_records import rec
from scipy import stats as sps

from gradbench import claims
from gradbench.errors import UsageError

RESNET = [0.90, 0.91, 0.89, 0.92]
PLAIN = [0.80, 0.83, 0.79, 0.84]


def image_records(resnet=RESNET, plain=PLAIN) -> list[dict]:
    records = [rec("image", "resnet-56", s, v) for s, v in enumerate(resnet)]
    return records + [rec("image", "plain-56", s, v) for s, v in enumerate(plain)]


def test_parse_claim_with_margin_and_level() -> None:
    claim = claims.parse_claim("image: resnet-56 > plain-56 on test_accuracy by 0.02 at 0.01")
    assert (claim.task, claim.a, claim.op, claim.b, claim.metric) == (
        "image",
        "resnet-56",
        ">",
        "plain-56",
        "test_accuracy",
    )
    assert claim.margin == 0.02 and claim.level == 0.01
    # Aliases become the task's own name; bracketed training options stay with the side.
    claim = claims.parse_claim("fashion-mnist: rnn [clip_norm=1] < rnn on diverged")
    assert claim.task == "image" and claim.a == "rnn [clip_norm=1]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imag: resnet-56 > plain-56 on test_accuracy", "unknown task 'imag'"),
        ("image: resnt-56 > plain-56 on test_accuracy", "unknown model 'resnt-56'"),
        ("image: resnet-56 >> plain-56 on test_accuracy", "cannot read claim"),
        ("image: resnet-56 > plain-56 on test_accuracy at 2", "level must be in"),
    ],
)
def test_bad_claim_lines_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.claims"
    path.write_text(f"# a comment\n\n{text}\n")
    with pytest.raises(UsageError, match=message) as caught:
        claims.read_claims(path)
    assert str(caught.value).startswith(f"{path}:3: ")


def test_claim_holds_when_the_one_sided_paired_test_rejects() -> None:
    claim = claims.parse_claim("image: resnet-56 > plain-56 on test_accuracy")
    (outcome,) = claims.evaluate([claim], image_records())
    assert outcome.status == "holds" and outcome.ok
    expected = sps.ttest_rel(RESNET, PLAIN, alternative="greater").pvalue
    assert outcome.stats.p_value == pytest.approx(expected)
    assert outcome.stats.n == 4


def test_claim_on_the_wrong_side_fails_and_a_margin_counts() -> None:
    wrong = claims.parse_claim("image: resnet-56 < plain-56 on test_accuracy")
    too_big = claims.parse_claim("image: resnet-56 > plain-56 on test_accuracy by 0.2")
    close = claims.parse_claim("image: resnet-56 > plain-56 on test_accuracy by 0.085")
    outcomes = claims.evaluate([wrong, too_big, close], image_records())
    assert [o.status for o in outcomes] == ["fails", "fails", "not significant"]
    assert "not below" in outcomes[0].why
    # Margin 0.085 of a mean difference 0.09: the right side, not significantly.
    assert outcomes[2].stats.p_value == pytest.approx(
        sps.ttest_rel(RESNET, [p + 0.085 for p in PLAIN], alternative="greater").pvalue
    )


def test_one_seed_is_not_significant_unless_direction_only() -> None:
    records = image_records(resnet=[0.9], plain=[0.8])
    claim = claims.parse_claim("image: resnet-56 > plain-56 on test_accuracy")
    (outcome,) = claims.evaluate([claim], records)
    assert outcome.status == "not significant" and "too few seeds" in outcome.why
    (outcome,) = claims.evaluate([claim], records, direction_only=True)
    assert outcome.status == "holds (direction only)" and outcome.ok


def test_claims_on_missing_rows_or_metrics_are_usage_errors() -> None:
    records = image_records()
    for text, message in [
        ("image: resnet-20 > plain-56 on test_accuracy", "no records of 'resnet-20'"),
        ("adding-100: lstm < rnn on test_mse", "no records of task adding-100"),
        ("image: resnet-56 > plain-56 on test_f1", "unknown metric 'test_f1'"),
    ]:
        with pytest.raises(UsageError, match=message) as caught:
            claims.evaluate([claims.parse_claim(text, "c.claims:7")], records)
        assert str(caught.value).startswith("c.claims:7: ")


def test_builtin_article_claims_parse_and_cite_a_paper() -> None:
    path = claims.claims_path("article")
    parsed = claims.read_claims(path)
    assert len(parsed) >= 6
    assert {c.task for c in parsed} >= {"image", "adding-100", "translation"}
    text = path.read_text()
    # Every block of claims is preceded by a comment citing its paper (a year in it).
    blocks = [
        b for b in text.split("\n\n") if any(not line.startswith("#") for line in b.splitlines())
    ]
    for block in blocks:
        comments = " ".join(line for line in block.splitlines() if line.startswith("#"))
        assert any(str(year) in comments for year in range(1990, 2030)), block


def test_check_cli_passes_where_claims_hold_and_fails_where_not(tmp_path: Path) -> None:
    from fake_records import store_with
    from typer.testing import CliRunner

    from gradbench.cli import app

    store_with(tmp_path / "r", image_records(), with_series=False)
    runner = CliRunner()
    holds = "image: resnet-56 > plain-56 on test_accuracy"
    fails = "image: plain-56 > resnet-56 on test_accuracy"
    result = runner.invoke(app, ["check", holds, "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    summary = tmp_path / "claims.md"
    result = runner.invoke(
        app, ["check", holds, fails, "--results", str(tmp_path / "r"), "-o", str(summary)]
    )
    assert result.exit_code == 1
    assert "1 of 2 claims hold" in summary.read_text()
    assert "| fails" in summary.read_text()
    result = runner.invoke(app, ["check", "--results", str(tmp_path / "r")])
    assert result.exit_code == 2
