"""`gradbench list tasks|models`: names, aliases, descriptions; with --verbose, options.

Listing tasks imports no model and, for the built-in tasks, not torch either: the task
modules import it inside their factories, so `gradbench list tasks` starts in well
under a second and a half.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


def _option_rows(factory: Any, suffix_param: str | None) -> list[dict[str, Any]]:
    """A factory's options with their types and defaults, less the one its name sets."""
    from gradbench.options import describe_options

    return [
        {"name": name, "type": type_text, "default": _default(default)}
        for name, type_text, default in describe_options(factory)
        if name != suffix_param
    ]


def entry_options(entry: Any, kind: str) -> list[dict[str, Any]]:
    """The ``-O`` (task) or ``NAME:key=value`` (model) options of an entry, with defaults."""
    rows = _option_rows(entry.factory, entry.suffix_param)
    if kind == "models":
        rows.append({"name": "init", "type": "str", "default": "default"})
    return rows


def variant_options(entry: Any) -> dict[str, list[dict[str, Any]]]:
    """Input kind -> the options the name takes on tasks of that kind (a variant's own
    factory, e.g. ``attention`` for ``gru`` on a translation task), where it has one."""
    from gradbench.registry import MODELS

    return {
        kind: _option_rows(factory, entry.suffix_param)
        for kind, factory in sorted(MODELS.variants(entry.name).items())
    }


def _default(value: Any) -> Any:
    import inspect

    return None if value is inspect.Parameter.empty else value


def list_entries(
    what: str,
    pattern: str,
    verbose: bool,
    as_json: bool,
    tasks_dir: Path | None,
    console: Console,
) -> None:
    from gradbench.plugins import load_plugins
    from gradbench.registry import MODELS, TASKS

    load_plugins(tasks_dir, models=what == "models")
    registry = TASKS if what == "tasks" else MODELS
    entries = registry.entries(pattern)
    if as_json:
        payload = []
        for e in entries:
            item: dict[str, Any] = {
                "name": e.name,
                "aliases": list(e.aliases),
                "family": f"{e.name}-{{{e.suffix_param}}}" if e.suffix_param else None,
                "description": e.description,
                "tags": list(e.tags),
            }
            if verbose:
                item["options"] = entry_options(e, what)
                if what == "models":
                    item["variants"] = variant_options(e)
            payload.append(item)
        print(json.dumps(payload, indent=2, default=str))
        return
    from rich.table import Table

    table = Table("name", "aliases", "description")
    if verbose:
        table.add_column("options (default)")
    for e in entries:
        name = f"{e.name}[-{e.suffix_param}]" if e.suffix_param else e.name
        cells = [escape(name), escape(", ".join(e.aliases)), escape(e.description)]
        if verbose:
            base = entry_options(e, what)
            shown = [f"{o['name']}: {o['type']} = {o['default']!r}" for o in base]
            known = {(o["name"], o["default"]) for o in base}
            for input_kind, rows in (variant_options(e) if what == "models" else {}).items():
                extra = [o for o in rows if (o["name"], o["default"]) not in known]
                shown.append(f"on {input_kind} tasks (where different):")
                shown += [f"  {o['name']}: {o['type']} = {o['default']!r}" for o in extra]
            cells.append(escape("\n".join(shown) or "none"))
        table.add_row(*cells)
    console.print(table)
