"""Paired statistics: scipy's tests and bootstrap on seed-paired values, censoring, rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fake_records import rec
from scipy import stats as sps

from gradbench import stats
from gradbench.errors import UsageError
from gradbench.stats import Observation


def obs(values: list[float | None]) -> dict[int, Observation]:
    return {seed: Observation(v) for seed, v in enumerate(values)}


def test_paired_difference_uses_scipy_t_test_and_a_paired_bootstrap() -> None:
    a = [0.91, 0.90, 0.93, 0.92, 0.95]
    b = [0.85, 0.86, 0.84, 0.88, 0.87]
    result = stats.paired(obs(a), obs(b), "test_accuracy")
    diff = np.subtract(a, b)
    assert result.n == 5 and result.seeds == (0, 1, 2, 3, 4)
    assert result.difference == pytest.approx(diff.mean())
    assert result.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue)
    # The interval brackets the mean difference and lies within the observed range.
    assert diff.min() <= result.ci_low < result.difference < result.ci_high <= diff.max()
    one_sided = stats.paired(obs(a), obs(b), "test_accuracy", alternative="greater")
    assert one_sided.p_value == pytest.approx(sps.ttest_rel(a, b, alternative="greater").pvalue)


def test_pairing_is_by_seed_not_by_order() -> None:
    # Seed 0 of A is paired with seed 0 of B even when listed in another order, and a
    # seed only one side has is left out.
    a = {2: Observation(3.0), 0: Observation(1.0), 1: Observation(2.0), 7: Observation(9.0)}
    b = {0: Observation(0.5), 1: Observation(1.0), 2: Observation(2.5)}
    result = stats.paired(a, b, "m")
    assert result.seeds == (0, 1, 2)
    assert result.difference == pytest.approx(np.mean([0.5, 1.0, 0.5]))


def test_wilcoxon_and_non_finite_pairs_dropped() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 5.0, None]
    b = [0.0, 0.5, 1.0, 1.0, 0.2, 0.0]
    result = stats.paired(obs(a), obs(b), "m", test="wilcoxon")
    assert result.n == 5 and result.dropped == 1
    assert result.p_value == pytest.approx(sps.wilcoxon(a[:5], b[:5]).pvalue)


def test_one_pair_has_no_interval_and_no_test() -> None:
    result = stats.paired(obs([1.0]), obs([0.5]), "m")
    assert result.n == 1 and result.difference == 0.5
    assert math.isnan(result.ci_low) and math.isnan(result.p_value)
    assert result.notes


def test_time_to_target_treats_a_miss_as_censored_not_zero() -> None:
    # A reached in 10-12 s on every seed; B missed the target on seeds 0 and 1 (ran the
    # full 50 s) and reached it in 30 s on seed 2.
    a = [
        rec("image", "resnet-20", s, 0.9, target={"reached": True, "seconds": 10.0 + s})
        for s in range(3)
    ]
    b = [
        rec(
            "image",
            "plain-20",
            s,
            0.5,
            target={"reached": s == 2, "seconds": 30.0 if s == 2 else None},
        )
        for s in range(3)
    ]
    for r in b:
        r["train_seconds"] = 50.0
    observed = [stats.observe(r, "time_to_target") for r in b]
    assert [o.censored for o in observed] == [True, True, False]
    assert [o.value for o in observed] == [50.0, 50.0, 30.0]  # the bound, not 0 nor inf
    result = stats.paired(
        {r["seed"]: stats.observe(r, "time_to_target") for r in a},
        {r["seed"]: o for r, o in zip(b, observed, strict=True)},
        "time_to_target",
        alternative="less",
    )
    assert result.test == "sign" and result.censored == 2
    assert result.difference == pytest.approx(np.mean([10 - 50, 11 - 50, 12 - 30]))
    assert result.p_value == pytest.approx(sps.binomtest(0, 3, 0.5, alternative="less").pvalue)


def test_censored_pair_with_unknown_order_is_not_counted() -> None:
    # A missed at 5 s (its budget ended early); B reached at 30 s: which is faster is unknown.
    x, y = np.array([5.0]), np.array([30.0])
    assert math.isnan(stats.sign_test(x, y, np.array([True]), np.array([False]), "less"))


def test_rows_group_like_the_leaderboard_and_selectors_pick_one() -> None:
    records = [rec("adding-100", "rnn", s, 0.17) for s in range(2)]
    records += [rec("adding-100", "rnn", s, 0.10, train={"clip_norm": 1.0}) for s in range(2)]
    records += [rec("adding-100", "lstm", s, 0.01) for s in range(2)]
    rows = stats.table_rows(records)
    (title,) = rows
    labels = sorted(r.label for r in rows[title])
    assert labels == ["lstm [clip_norm=None]", "rnn [clip_norm=1.0]", "rnn [clip_norm=None]"]
    table = rows[title]
    assert stats.select_row(table, "lstm").label == "lstm [clip_norm=None]"
    assert stats.select_row(table, "rnn [clip_norm=1]").label == "rnn [clip_norm=1.0]"
    assert stats.select_row(table, "rnn [clip_norm=None]").label == "rnn [clip_norm=None]"
    with pytest.raises(UsageError, match="matches 2 configurations"):
        stats.select_row(table, "rnn")
    with pytest.raises(UsageError, match="no records of 'gru'"):
        stats.select_row(table, "gru")


def test_metric_direction_disagreement_is_an_error() -> None:
    a = rec("image", "plain-20", 0, 0.5)
    b = rec("image", "resnet-20", 0, 0.6)
    b["metric_directions"] = {"test_accuracy": False, "test_loss": False}
    with pytest.raises(UsageError, match="higher-is-better in some records"):
        stats.metric_direction([a, b], "test_accuracy")
    with pytest.raises(UsageError, match="unknown metric 'test_f1'"):
        stats.metric_direction([a], "test_f1")
