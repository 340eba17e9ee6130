"""Paired statistics over seeds, from scipy: seed i of A against seed i of B.

Two configurations trained with the same seed see the same data order (the loop seeds
data order by the seed), so their difference on that seed is one paired observation.
Over the seeds both have, this module gives the mean difference, its bootstrap
confidence interval (``scipy.stats.bootstrap`` with ``paired=True``) and a paired test
(``scipy.stats.ttest_rel`` or ``scipy.stats.wilcoxon``).

Time-to-target is censored: a run that never reached the target only says "slower
than the time it ran". Its time is kept at that bound (the restricted mean of survival
analysis, never zero and never infinity) for the mean difference, and the test is a
sign test (``scipy.stats.binomtest``) on the pairs whose order is known.

It also groups records into the leaderboard's rows (``table_rows``) and picks a row by
a readable selector (``select_row``), which claims, ``compare``, ``leaderboard --vs``
and the HTML report share.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

from gradbench import leaderboard as lb
from gradbench.errors import UsageError
from gradbench.records import RunRecord

TestName = Literal["t", "wilcoxon"]
Alternative = Literal["two-sided", "greater", "less"]

# Figures read from a record beside its task metrics: name -> higher is better (None: no
# direction, e.g. a gradient ratio whose sign is the finding).
DERIVED_METRICS: dict[str, bool | None] = {
    "train_loss": False,
    "diverged": False,
    "first_last_log10": None,
    "time_to_target": False,
    "steps_to_target": False,
}
CENSORED_METRICS = ("time_to_target", "steps_to_target")


@dataclass(frozen=True)
class Observation:
    value: float | None  # None: not finite (e.g. a diverged run's test loss)
    censored: bool = False  # the value is a lower bound (target not reached)


def observe(record: RunRecord, metric: str) -> Observation:
    """One record's figure for ``metric``: a task metric or one of ``DERIVED_METRICS``."""
    if metric in CENSORED_METRICS:
        target = record.get("target") or {}
        if not target:
            return Observation(None)
        if target.get("reached"):
            key = "seconds" if metric == "time_to_target" else "step"
            return Observation(_finite(target.get(key)))
        spent = record.get("train_seconds") if metric == "time_to_target" else record.get("steps")
        return Observation(_finite(spent), censored=True)
    if metric == "train_loss":
        return Observation(_finite(record.get("final_train_loss")))
    if metric == "diverged":
        return Observation(float(bool(record.get("diverged"))))
    if metric == "first_last_log10":
        return Observation(_finite((record.get("probes") or {}).get("first_last_ratio_log10")))
    return Observation(_finite((record.get("metrics") or {}).get(metric)))


def _finite(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric_direction(records: list[RunRecord], metric: str) -> bool | None:
    """Higher is better for ``metric`` in these records; a disagreement is an error."""
    if metric in DERIVED_METRICS:
        return DERIVED_METRICS[metric]
    seen = {r["metric_directions"][metric] for r in records if metric in r["metric_directions"]}
    if len(seen) > 1:
        raise UsageError(
            f"metric {metric!r} is higher-is-better in some records and lower-is-better in "
            "others; they do not measure the same thing"
        )
    if not seen:
        known = sorted({m for r in records for m in r["metric_directions"]} | set(DERIVED_METRICS))
        raise UsageError(f"unknown metric {metric!r}; the records have {', '.join(known)}")
    return seen.pop()


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A against B on one metric (difference = A - B)."""

    metric: str
    n: int  # pairs used
    mean_a: float
    mean_b: float
    difference: float  # mean over pairs of A - B (restricted, for censored metrics)
    ci_low: float
    ci_high: float
    p_value: float  # of the test asked for (nan when it cannot be computed)
    test: str  # "t", "wilcoxon" or "sign" (censored metrics)
    confidence: float
    seeds: tuple[int, ...] = ()
    censored: int = 0  # pairs with at least one censored side
    dropped: int = 0  # pairs left out: a side not finite
    notes: tuple[str, ...] = field(default=())

    def interval_text(self, digits: int = 3) -> str:
        if math.isnan(self.ci_low):
            return "—"
        return f"[{self.ci_low:+.{digits}g}, {self.ci_high:+.{digits}g}]"


def paired(
    a: dict[int, Observation],
    b: dict[int, Observation],
    metric: str,
    *,
    test: TestName = "t",
    alternative: Alternative = "two-sided",
    shift: float = 0.0,
    confidence: float = 0.95,
) -> Paired:
    """Compare A with B over their common seeds; the test is of A - B - ``shift`` against 0.

    ``shift`` is a claim's margin: "A > B by 0.02" tests A - B - 0.02 > 0.
    """
    common = sorted(set(a) & set(b))
    usable = [s for s in common if a[s].value is not None and b[s].value is not None]
    dropped = len(common) - len(usable)
    x = np.array([a[s].value for s in usable], dtype=np.float64)
    y = np.array([b[s].value for s in usable], dtype=np.float64)
    censored_a = np.array([a[s].censored for s in usable], dtype=bool)
    censored_b = np.array([b[s].censored for s in usable], dtype=bool)
    n = len(usable)
    notes: list[str] = []
    if n == 0:
        nan = float("nan")
        return Paired(metric, 0, nan, nan, nan, nan, nan, nan, test, confidence, (), 0, dropped)
    diff = x - y
    low, high = bootstrap_interval(x, y, confidence)
    censored = int((censored_a | censored_b).sum())
    if metric in CENSORED_METRICS:
        used_test = "sign"
        p_value = sign_test(x, y, censored_a, censored_b, alternative, shift)
    else:
        used_test = test
        p_value = paired_test(x, y, test, alternative, shift)
    if n < 2:
        notes.append("one pair: no interval, no test")
    return Paired(
        metric,
        n,
        float(x.mean()),
        float(y.mean()),
        float(diff.mean()),
        low,
        high,
        p_value,
        used_test,
        confidence,
        tuple(usable),
        censored,
        dropped,
        tuple(notes),
    )


def bootstrap_interval(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float]:
    """Paired bootstrap interval of mean(x - y): BCa, percentile where BCa is undefined."""
    diff = x - y
    if len(diff) < 2:
        return float("nan"), float("nan")
    if np.ptp(diff) == 0:
        # Every pair differs by the same amount: every resample has that mean.
        return float(diff[0]), float(diff[0])

    def mean_difference(first, second, axis):
        return np.mean(first - second, axis=axis)

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # Few seeds make BCa's acceleration undefined; percentile is the fallback.
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (x, y),
                mean_difference,
                paired=True,
                vectorized=True,
                confidence_level=confidence,
                n_resamples=4999,
                method=method,
                rng=np.random.default_rng(0),
            )
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            return float(low), float(high)
    return float("nan"), float("nan")


def paired_test(
    x: np.ndarray, y: np.ndarray, test: TestName, alternative: Alternative, shift: float = 0.0
) -> float:
    """p-value of the paired t or Wilcoxon signed-rank test of x - y - shift against 0."""
    if len(x) < 2:
        return float("nan")
    shifted = y + shift
    diff = x - shifted
    if np.all(diff == 0):
        return 1.0 if alternative == "two-sided" else 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if test == "t":
            if np.ptp(diff) == 0:
                # No spread: the t statistic is infinite; the sign alone decides.
                agrees = {"greater": diff[0] > 0, "less": diff[0] < 0, "two-sided": True}
                return 0.0 if agrees[alternative] else 1.0
            return float(stats.ttest_rel(x, shifted, alternative=alternative).pvalue)
        if test == "wilcoxon":
            return float(stats.wilcoxon(x, shifted, alternative=alternative).pvalue)
    raise UsageError(f"unknown test {test!r}: use t or wilcoxon")


def sign_test(
    x: np.ndarray,
    y: np.ndarray,
    censored_x: np.ndarray,
    censored_y: np.ndarray,
    alternative: Alternative,
    shift: float = 0.0,
) -> float:
    """Sign test on the pairs whose order is known despite censoring.

    A censored time is a lower bound: "x missed at 50 s, y reached at 30 s" says x > y;
    "x missed at 20 s, y reached at 30 s" says nothing, nor does "both missed".
    """
    above = below = 0
    for xi, yi, cx, cy in zip(x, y + shift, censored_x, censored_y, strict=True):
        if cx and cy:
            continue
        if cx and not cy:
            above += xi >= yi
            continue
        if cy and not cx:
            below += yi >= xi
            continue
        above += xi > yi
        below += xi < yi
    trials = above + below
    if trials == 0:
        return float("nan")
    return float(stats.binomtest(above, trials, 0.5, alternative=alternative).pvalue)


# --- rows: the leaderboard's grouping, with the records kept ------------------------------


@dataclass
class Row:
    """One leaderboard row: a configuration on a task and data set, latest record per seed."""

    task: str
    dataset: str
    label: str  # as the leaderboard prints it
    config: str  # leaderboard.config_key
    records: dict[int, RunRecord]

    @property
    def title(self) -> str:
        return f"{self.task} | {self.dataset}"

    def observations(self, metric: str) -> dict[int, Observation]:
        return {seed: observe(record, metric) for seed, record in self.records.items()}

    def mean(self, metric: str) -> float:
        values = [o.value for o in self.observations(metric).values() if o.value is not None]
        return float(np.mean(values)) if values else float("nan")


def table_rows(records: list[RunRecord]) -> dict[str, list[Row]]:
    """Leaderboard title -> rows, grouped exactly as ``leaderboard.build_tables`` groups."""
    tables: dict[str, dict[str, list[RunRecord]]] = {}
    for record in lb.latest_per_seed(records):
        title = f"{record['task']} | {lb.dataset_key(record)}"
        tables.setdefault(title, {}).setdefault(lb.config_key(record), []).append(record)
    result: dict[str, list[Row]] = {}
    for title, groups in sorted(tables.items()):
        differing = lb._differing_train_options(list(groups.values()))
        rows = []
        for config, group in groups.items():
            first = group[0]
            rows.append(
                Row(
                    first["task"],
                    lb.dataset_key(first),
                    lb.row_label(first, differing),
                    config,
                    {r["seed"]: r for r in sorted(group, key=lambda r: r["seed"])},
                )
            )
        result[title] = rows
    return result


def _same(wanted: str, actual) -> bool:
    if wanted.lower() == "none":
        return actual is None
    try:
        return actual is not None and float(wanted) == float(actual)
    except (TypeError, ValueError):
        return str(actual) == wanted


def parse_selector(text: str) -> tuple[str, dict[str, str]]:
    """'rnn [clip_norm=1]' -> ('rnn', {'clip_norm': '1'}); the model part is normalised."""
    from gradbench.models.build import parse_model_arg

    text = text.strip()
    filters: dict[str, str] = {}
    if text.endswith("]") and "[" in text:
        head, _, inside = text[:-1].rpartition("[")
        text = head.strip()
        for item in filter(None, (i.strip() for i in inside.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"{item!r} in [{inside}] must be written key=value")
            filters[key.strip().replace("-", "_")] = value.strip()
    return parse_model_arg(text).label, filters


def select_row(rows: list[Row], selector: str) -> Row:
    """The one row ``selector`` names: its exact label, or a model label plus the training
    options in brackets that tell it apart (``rnn [clip_norm=1]``)."""
    exact = [r for r in rows if r.label == selector.strip()]
    if len(exact) == 1:
        return exact[0]
    label, filters = parse_selector(selector)
    matches = []
    for row in rows:
        first = next(iter(row.records.values()))
        if first["model_label"] != label:
            continue
        if all(_same(v, first["train_options"].get(k)) for k, v in filters.items()):
            matches.append(row)
    if not matches:
        raise UsageError(f"no records of {selector!r}")
    if len(matches) > 1:
        labels = "; ".join(r.label for r in matches)
        raise UsageError(
            f"{selector!r} matches {len(matches)} configurations ({labels}); "
            "name one exactly or add the differing options in brackets"
        )
    return matches[0]


def rows_for_task(tables: dict[str, list[Row]], task: str) -> list[Row]:
    """The rows of ``task``'s one table; a task recorded on several data sets is ambiguous."""
    titles = [t for t, rows in tables.items() if rows and rows[0].task == task]
    if not titles:
        return []
    if len(titles) > 1:
        raise UsageError(
            f"task {task} has records on {len(titles)} data sets ({'; '.join(titles)}); "
            "keep one data set per results directory"
        )
    return tables[titles[0]]


def format_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"
