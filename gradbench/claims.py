"""Claims a person can read, checked on the records with paired statistics.

A claim is one line::

    TASK: A > B on METRIC [by MARGIN] [at LEVEL]

``A`` and ``B`` name leaderboard rows: a model label (``resnet-56``,
``plain-20:activation=sigmoid``), optionally followed by the training options that tell
it apart in brackets (``rnn [clip_norm=1]``). ``>`` and ``<`` are numeric: "lstm < rnn
on test_mse" says the LSTM's test MSE is lower. ``by MARGIN`` asks for at least that
difference; ``at LEVEL`` sets the significance level (default 0.05).

A claim *holds* when the mean paired difference is on its side of the margin and a
one-sided paired test rejects "it is not" at the level. Otherwise it *fails* (the
difference is on the wrong side) or is *not significant*. Claims files hold one claim a
line; ``#`` starts a comment, where each built-in claim cites its paper.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gradbench.errors import UsageError
from gradbench.records import RunRecord
from gradbench.stats import (
    DERIVED_METRICS,
    Paired,
    TestName,
    metric_direction,
    paired,
    rows_for_task,
    select_row,
    table_rows,
)

DEFAULT_LEVEL = 0.05
BUILTIN_SUFFIX = ".claims"
CLAIM_PATTERN = re.compile(
    r"^(?P<task>[^\s:]+)\s*:\s+(?P<a>.+?)\s+(?P<op>[<>])\s+(?P<b>.+?)\s+on\s+(?P<metric>\S+)"
    r"(?:\s+by\s+(?P<margin>\S+))?(?:\s+at\s+(?P<level>\S+))?\s*$"
)


@dataclass(frozen=True)
class Claim:
    task: str
    a: str
    op: str  # ">" or "<"
    b: str
    metric: str
    margin: float = 0.0
    level: float = DEFAULT_LEVEL
    source: str = "<claim>"  # "file:line", for messages
    text: str = ""

    @property
    def alternative(self) -> str:
        return "greater" if self.op == ">" else "less"


def parse_claim(text: str, source: str = "<claim>") -> Claim:
    """One claim line -> Claim; task and model names are checked against the registries."""
    from gradbench.plugins import load_plugins
    from gradbench.registry import TASKS
    from gradbench.stats import parse_selector

    match = CLAIM_PATTERN.match(text.strip())
    if not match:
        raise UsageError(
            f"{source}: cannot read claim {text.strip()!r}; write "
            "'TASK: A > B on METRIC [by MARGIN] [at LEVEL]'"
        )
    load_plugins()
    try:
        task = TASKS.canonical(match["task"])
        for side in (match["a"], match["b"]):
            parse_selector(side)
        margin = float(match["margin"]) if match["margin"] else 0.0
        level = float(match["level"]) if match["level"] else DEFAULT_LEVEL
    except UsageError as error:
        raise UsageError(f"{source}: {error}") from None
    except ValueError:
        raise UsageError(
            f"{source}: margin and level must be numbers in {text.strip()!r}"
        ) from None
    if not (0 < level < 1) or not math.isfinite(margin) or margin < 0:
        raise UsageError(f"{source}: the level must be in (0, 1) and the margin >= 0")
    if match["a"].strip() == match["b"].strip():
        raise UsageError(f"{source}: a claim compares two different rows")
    return Claim(
        task,
        match["a"].strip(),
        match["op"],
        match["b"].strip(),
        match["metric"],
        margin,
        level,
        source,
        text.strip(),
    )


def builtin_claims_files() -> dict[str, Path]:
    folder = resources.files("gradbench") / "suites"
    return {
        p.name[: -len(BUILTIN_SUFFIX)]: Path(str(p))
        for p in folder.iterdir()
        if p.name.endswith(BUILTIN_SUFFIX)
    }


def claims_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A built-in claims file by name (``article``), else a path."""
    builtin = builtin_claims_files()
    if str(name) in builtin:
        return builtin[str(name)]
    path = Path(name)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if not path.is_file():
        raise UsageError(
            f"no claims file {str(name)!r} (built-in: {', '.join(sorted(builtin))}; or a path)"
        )
    return path


def read_claims(path: Path) -> list[Claim]:
    claims = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text:
            claims.append(parse_claim(text, f"{path}:{number}"))
    return claims


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    status: str  # "holds", "fails", "not significant", "holds (direction only)"
    why: str
    stats: Paired

    @property
    def ok(self) -> bool:
        return self.status.startswith("holds")


def evaluate(
    claims: list[Claim],
    records: list[RunRecord],
    *,
    test: TestName = "t",
    confidence: float = 0.95,
    direction_only: bool = False,
) -> list[Outcome]:
    """Every claim's outcome; a claim naming rows or metrics the records lack is an error.

    All claims are resolved before any is judged, so bad input is one line and no table.
    ``direction_only`` accepts the right sign without significance (for one-seed smoke
    suites, whose single pair allows no test); the table says so.
    """
    tables = table_rows(records)
    resolved = []
    for claim in claims:
        try:
            rows = rows_for_task(tables, claim.task)
            if not rows:
                raise UsageError(f"no records of task {claim.task}")
            row_a, row_b = select_row(rows, claim.a), select_row(rows, claim.b)
            direction = metric_direction(
                [*row_a.records.values(), *row_b.records.values()], claim.metric
            )
        except UsageError as error:
            raise UsageError(f"{claim.source}: {error}") from None
        resolved.append((claim, row_a, row_b, direction))
    outcomes = []
    for claim, row_a, row_b, _direction in resolved:
        shift = claim.margin if claim.op == ">" else -claim.margin
        result = paired(
            row_a.observations(claim.metric),
            row_b.observations(claim.metric),
            claim.metric,
            test=test,
            alternative=claim.alternative,
            shift=shift,
            confidence=confidence,
        )
        outcomes.append(judge(claim, result, direction_only))
    return outcomes


def judge(claim: Claim, result: Paired, direction_only: bool = False) -> Outcome:
    if result.n == 0:
        why = "no seed where both have a finite value"
        if result.dropped:
            why += f" ({result.dropped} pairs not finite)"
        return Outcome(claim, "not significant", why, result)
    bound = (claim.margin if claim.op == ">" else -claim.margin) + 0.0  # no "-0"
    beyond = result.difference - bound
    right_side = beyond > 0 if claim.op == ">" else beyond < 0
    margin = f" by {claim.margin:g}" if claim.margin else ""
    side = "above" if claim.op == ">" else "below"
    if not right_side:
        return Outcome(
            claim,
            "fails",
            f"mean difference {result.difference:+.4g} is not {side} {bound:+g}",
            result,
        )
    if result.p_value < claim.level:
        return Outcome(
            claim, "holds", f"p={result.p_value:.2g} < {claim.level:g} (n={result.n})", result
        )
    if direction_only:
        return Outcome(
            claim,
            "holds (direction only)",
            f"right side{margin}; n={result.n}, significance not asked for",
            result,
        )
    if math.isnan(result.p_value):
        why = f"n={result.n}: too few seeds for a {result.test} test"
    else:
        why = f"p={result.p_value:.2g} >= {claim.level:g} (n={result.n}); more seeds may tell"
    return Outcome(claim, "not significant", why, result)


def check_metric_names(claims: list[Claim], metrics_by_task: dict[str, set[str]]) -> None:
    """Claims on metrics the task does not report (known before any run) are errors."""
    for claim in claims:
        known = metrics_by_task.get(claim.task)
        if known is None:
            continue
        if claim.metric not in known and claim.metric not in DERIVED_METRICS:
            names = ", ".join(sorted(known | set(DERIVED_METRICS)))
            raise UsageError(
                f"{claim.source}: task {claim.task} has no metric {claim.metric!r} ({names})"
            )
