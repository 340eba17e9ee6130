"""`gradbench leaderboard`: select records (task by name or alias, model globs), render them."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from gradbench.cli_options import err, format_renderer, out, write_text_atomic
from gradbench.errors import GradbenchError, UsageError


def task_matcher(task: str | None, tasks_dir: Path | None):
    """A predicate over a record's task: the name, any alias of it, or a family (adding)."""
    if task is None:
        return lambda name: True
    names = {task}
    try:
        from gradbench.plugins import load_plugins
        from gradbench.registry import TASKS

        load_plugins(tasks_dir, models=False)
        entry, _ = TASKS.resolve(task)
        names |= {TASKS.canonical(task), entry.name}
        family = entry.name if entry.suffix_param and task in (entry.name, *entry.aliases) else None
    except GradbenchError:
        family = None  # a task no longer registered still has its records
    return lambda name: name in names or (family is not None and name.startswith(f"{family}-"))


def leaderboard(
    results: Path,
    *,
    task: str | None = None,
    models: list[str] | None = None,
    fmt: str = "table",
    columns: str | None = None,
    wide: bool = False,
    output: Path | None = None,
    tasks_dir: Path | None = None,
    vs: str | None = None,
) -> None:
    from gradbench import leaderboard as lb
    from gradbench.plan import check_output_file
    from gradbench.records import ResultsStore

    if output is not None:
        check_output_file(output, "--output")
    chosen_columns = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    store = ResultsStore(results)
    records = store.load()
    if not records:
        raise GradbenchError(f"no run records in {store.runs_file}; run `gradbench run` first")
    matches_task = task_matcher(task, tasks_dir)
    records = [r for r in records if matches_task(r["task"])]
    if not records:
        raise UsageError(f"no records for task {task!r}")
    if models:
        records = [
            r
            for r in records
            if any(
                fnmatch.fnmatchcase(r["model"], pattern)
                or fnmatch.fnmatchcase(r["model_label"], pattern)
                for pattern in models
            )
        ]
        if not records:
            raise UsageError(f"no records for models matching {', '.join(models)}")
    tables = lb.build_tables(records)
    if vs:
        from gradbench.compare import add_versus

        add_versus(tables, records, vs)
    view = lb.TableView(columns=chosen_columns, wide=wide)
    view.check(tables)
    # A file or Markdown has no width to fit: every column unless --columns chose.
    file_view = view if chosen_columns else lb.TableView(wide=True)
    if fmt == "table" and output is None:
        lb.render_rich(tables, out, view=view)
        return
    render = format_renderer(fmt, markdown=lb.to_markdown, csv=lb.to_csv, json=lb.to_json)
    text = render(tables, view=file_view) if fmt in ("table", "markdown", "md") else render(tables)
    if output is None:
        print(text, end="")
        return
    write_text_atomic(output, text)
    err.print(f"wrote {output}", highlight=False, markup=False)
