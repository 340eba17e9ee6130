"""Commands `suite`, `check`, `compare` and `report` (registered in gradbench.cli).

Heavy modules (torch, scipy, matplotlib) are imported inside the commands, so
`gradbench --help` stays fast.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from gradbench.cli_options import (
    CacheDir,
    CpusPerRun,
    DataDir,
    Download,
    ExecutorName,
    ExecutorOption,
    GpusPerRun,
    Jobs,
    RayAddress,
    ResultsDir,
    Retries,
    TasksDir,
    err,
    friendly_errors,
    out,
    plain,
    write_text_atomic,
)
from gradbench.errors import UsageError


class PairedTest(StrEnum):
    t = "t"
    wilcoxon = "wilcoxon"


class TableFormat(StrEnum):
    table = "table"
    markdown = "markdown"


Test = Annotated[
    PairedTest,
    typer.Option("--test", help="Paired test over seeds: t (ttest_rel) or wilcoxon (signed rank)."),
]
Confidence = Annotated[
    float,
    typer.Option(min=0.5, max=0.999, help="Confidence level of the bootstrap intervals."),
]
Format = Annotated[
    TableFormat, typer.Option("--format", "-f", help="table (terminal) or markdown.")
]
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Also write the Markdown table to this file."),
]


def _say(text: str) -> None:
    err.print(text, highlight=False, markup=False)


def _print_frame(frame, title: str, status_column: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=escape(title))
    for column in frame.columns:
        table.add_column(
            escape(str(column)),
            justify="left"
            if column in ("task", "model", "claim", "why", "status", "metric")
            else "right",
        )
    colours = {"holds": "green", "better": "green", "worse": "red", "fails": "red"}
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            text = escape(str(value))
            colour = colours.get(str(value).split(" ")[0]) if column == status_column else None
            cells.append(f"[{colour}]{text}[/]" if colour else text)
        table.add_row(*cells)
    out.print(table)


def suite_command(
    suite: Annotated[
        str, typer.Argument(help="Built-in suite (quick, standard, full) or a TOML file.")
    ],
    results: ResultsDir = Path("results"),
    force: Annotated[
        bool, typer.Option("--force", help="Re-run cells that already have records.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check the suite and list the cells to run; train nothing."),
    ] = False,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = True,
    tasks_dir: TasksDir = None,
    executor: ExecutorOption = ExecutorName.local,
    jobs: Jobs = None,
    address: RayAddress = None,
    cpus_per_run: CpusPerRun = None,
    gpus_per_run: GpusPerRun = None,
    retries: Retries = 0,
) -> None:
    """Run a suite of comparisons; re-running skips the cells whose records exist.

    With --jobs N or --executor ray, each comparison's cells run in worker processes or
    as Ray tasks, exactly as `gradbench run` runs them (docs/scale.md).
    """
    from gradbench.data import data_config
    from gradbench.plugins import load_plugins
    from gradbench.records import ResultsStore
    from gradbench.suite import load_suite, run_suite

    with friendly_errors():
        load_plugins(tasks_dir)
        spec = load_suite(suite)
        store = ResultsStore(results)
        data = data_config(data_dir, cache_dir, download)
        _say(
            f"suite {spec.name}: {len(spec.comparisons)} comparisons, {spec.cells} cells "
            f"-> {store.root}"
        )

        def on_cell(cell, status):
            label = f"{cell.comparison.task} {cell.item.spec.label} seed {cell.seed}"
            if status == "skip":
                _say(f"  done    {label}")
            elif status == "plan":
                _say(f"  to run  {label}")
            else:
                _say(f"  running {label} ...")

        def on_record(record):
            metric = record["primary_metric"]
            value = record["metrics"].get(metric)
            shown = "nan" if value is None else f"{value:.4f}"
            status = " DIVERGED" if record["diverged"] else ""
            _say(
                f"    {metric} {shown}, {record['steps']} steps, {record['train_seconds']:.1f}s, "
                f"verdict {record.get('verdict')}{status} [run {record['run_id']}]"
            )

        execution = None
        if plain(executor) != "local" or jobs is not None:
            from gradbench.sweep_cli import make_execution, sweep_reporter

            execution = make_execution(
                executor=executor,
                jobs=jobs,
                address=address,
                cpus_per_run=cpus_per_run,
                gpus_per_run=gpus_per_run,
                retries=retries,
                resume=not force,
            )
            execution.on_sweep = sweep_reporter(execution, None, quiet=False)
        counts = run_suite(
            spec,
            store,
            data,
            force=force,
            dry_run=dry_run,
            on_cell=on_cell,
            on_record=on_record,
            execution=execution,
            tasks_dir=tasks_dir,
        )
        _say(
            f"suite {spec.name}: ran {counts['ran']}, skipped {counts['skipped']} done"
            + (f", {counts['planned']} to run" if dry_run else "")
        )
        if dry_run:
            return
        from gradbench.leaderboard import build_tables, render_rich

        tasks = {c.task for c in spec.comparisons}
        records = [r for r in store.load() if r["task"] in tasks]
        render_rich(build_tables(records), out)
        if spec.claims:
            _say(
                f"claims: `gradbench check --suite {suite} --results {store.root}`"
                + (" --direction-only" if all(len(c.seeds) < 2 for c in spec.comparisons) else "")
            )


def check_command(
    claim: Annotated[
        list[str] | None,
        typer.Argument(help="Claims, e.g. 'image: resnet-56 > plain-56 on test_accuracy'."),
    ] = None,
    claims_file: Annotated[
        list[str] | None,
        typer.Option(
            "--claims", help="Claims file, or a built-in one by name (article). Repeatable."
        ),
    ] = None,
    suite: Annotated[
        str | None,
        typer.Option("--suite", help="Check the claims of this suite (name or TOML file)."),
    ] = None,
    results: ResultsDir = Path("results"),
    test: Test = PairedTest.t,
    confidence: Confidence = 0.95,
    direction_only: Annotated[
        bool,
        typer.Option(
            "--direction-only",
            help="Accept a claim on the right side of its margin without significance "
            "(one-seed smoke suites); the table says so.",
        ),
    ] = False,
    fmt: Format = TableFormat.table,
    output: Output = None,
) -> None:
    """Check claims with paired statistics; exit 1 if one fails or is not significant."""
    import pandas as pd

    from gradbench.claims import claims_path, evaluate, parse_claim, read_claims
    from gradbench.records import ResultsStore
    from gradbench.suite import load_suite

    with friendly_errors():
        claims = [parse_claim(text, f"argument {i + 1}") for i, text in enumerate(claim or [])]
        for name in claims_file or []:
            claims += read_claims(claims_path(name))
        if suite:
            claims += load_suite(suite).claims
        if not claims:
            raise UsageError("no claims: give a claim, --claims FILE or --suite NAME")
        store = ResultsStore(results)
        records = store.load()
        if not records:
            raise UsageError(f"no run records in {store.runs_file}")
        outcomes = evaluate(
            claims, records, test=test.value, confidence=confidence, direction_only=direction_only
        )
        from gradbench.leaderboard import fmt as number
        from gradbench.stats import format_p

        frame = pd.DataFrame(
            [
                {
                    "claim": o.claim.text,
                    "difference": number(o.stats.difference) if o.stats.n else "—",
                    f"{confidence:.0%} interval": o.stats.interval_text(),
                    "p": format_p(o.stats.p_value),
                    "test": o.stats.test,
                    "seeds": o.stats.n,
                    "status": o.status,
                    "why": o.why,
                }
                for o in outcomes
            ]
        )
        failed = [o for o in outcomes if not o.ok]
        markdown = (
            "## gradbench: claims\n\n"
            + f"**{len(outcomes) - len(failed)} of {len(outcomes)} claims hold.**\n\n"
            + frame.to_markdown(index=False)
            + "\n"
        )
        if fmt == TableFormat.markdown:
            typer.echo(markdown, nl=False)
        else:
            _print_frame(frame, f"claims on {store.runs_file}", status_column="status")
            _say(f"{len(outcomes) - len(failed)} of {len(outcomes)} claims hold")
        if output is not None:
            write_text_atomic(output, markdown)
        if failed:
            raise typer.Exit(1)


def compare_command(
    baseline: Annotated[
        Path,
        typer.Argument(help="Baseline: a results directory or an exported baseline JSON file."),
    ],
    candidate: Annotated[
        Path | None, typer.Argument(help="Candidate results directory (or baseline JSON file).")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export", help="Write BASELINE's latest records to this JSON file and stop."
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            min=0.0, help="Relative change that counts (0.02: 2% of the baseline's mean)."
        ),
    ] = 0.02,
    level: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Significance level of the paired test.")
    ] = 0.05,
    test: Test = PairedTest.t,
    confidence: Confidence = 0.95,
    fmt: Format = TableFormat.table,
    output: Output = None,
) -> None:
    """Baseline against candidate per task, model and metric; exit 1 on a significant regression."""
    from gradbench import compare as cmp

    with friendly_errors():
        if export is not None:
            if candidate is not None:
                raise UsageError("--export writes one baseline: give one results directory")
            count = cmp.export_baseline(cmp.load_side(baseline), export)
            _say(f"wrote {export} ({count} records)")
            return
        if candidate is None:
            raise UsageError("compare needs BASELINE and CANDIDATE (or --export FILE)")
        lines = cmp.compare(
            cmp.load_side(baseline),
            cmp.load_side(candidate),
            threshold=threshold,
            level=level,
            test=test.value,
            confidence=confidence,
        )
        markdown = cmp.to_markdown(lines)
        if fmt == TableFormat.markdown:
            typer.echo(markdown, nl=False)
        else:
            _print_frame(cmp.to_frame(lines), f"{baseline} -> {candidate}", status_column="status")
            _say(cmp.summary(lines))
        if output is not None:
            write_text_atomic(output, markdown)
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_file:
            with open(summary_file, "a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
        if any(line.regression for line in lines):
            raise typer.Exit(1)


def report_command(
    results: ResultsDir = Path("results"),
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            "--tensorboard",
            help="Also export the per-step series as TensorBoard event files under this "
            "folder (needs the tensorboard extra).",
        ),
    ] = None,
) -> None:
    """One self-contained HTML report: a section per task with tables and embedded plots."""
    from gradbench.html_report import write_report
    from gradbench.records import ResultsStore

    with friendly_errors():
        store = ResultsStore(results)
        path = write_report(store, output, task)
        _say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        if tensorboard is not None:
            from gradbench.tensorboard_export import export_tensorboard

            runs = export_tensorboard(store, tensorboard, task)
            _say(f"wrote TensorBoard events of {runs} runs under {tensorboard}")
