"""Finding task and model plugins: built-ins, entry points, and a tasks directory.

Built-in tasks are the modules of ``gradbench_tasks`` (the checkout's ``tasks/``).
Third-party packages register through the entry-point groups ``gradbench.tasks`` and
``gradbench.models`` (each entry point names a module to import, or a callable to
call). A directory of ``*.py`` files can be added with ``--tasks-dir`` or
``GRADBENCH_TASKS_DIR``, for plugins that are not packaged.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

from gradbench.errors import GradbenchError, UsageError

TASKS_DIR_ENV = "GRADBENCH_TASKS_DIR"
_loaded: set[str] = set()


def load_plugins(tasks_dir: str | Path | None = None, *, models: bool = True) -> None:
    """Import every plugin once; safe to call repeatedly.

    ``models=False`` skips the built-in models (and torch with them): `list tasks` needs
    only the task registrations, which import torch inside their factories.
    """
    if models:
        import gradbench.models  # noqa: F401  (built-in models)

    if "builtin" not in _loaded:
        import gradbench_tasks

        for info in pkgutil.iter_modules(gradbench_tasks.__path__):
            importlib.import_module(f"gradbench_tasks.{info.name}")
        _loaded.add("builtin")
    for group in ("gradbench.models", "gradbench.tasks"):
        for ep in entry_points(group=group):
            key = f"ep:{group}:{ep.name}"
            if key in _loaded:
                continue
            _loaded.add(key)
            with _plugin_errors(f"plugin {ep.value!r} (entry point {group}:{ep.name})"):
                target = ep.load()
                if callable(target):
                    target()
    tasks_dir = tasks_dir or os.environ.get(TASKS_DIR_ENV)
    if tasks_dir:
        load_directory(Path(tasks_dir))


def load_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise UsageError(f"tasks directory {str(directory)!r} does not exist")
    _loaded.add(f"dir:{directory.resolve()}")
    for path in sorted(directory.glob("*.py")):
        key = f"file:{path.resolve()}"
        if key in _loaded or path.name.startswith("_"):
            continue
        _loaded.add(key)
        name = f"gradbench_user_tasks.{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            with _plugin_errors(f"task plugin {str(path)!r}"):
                spec.loader.exec_module(module)
        except GradbenchError:
            sys.modules.pop(name, None)  # a half-imported module must not be found later
            raise


def _registers_a_task(path: Path) -> bool:
    """Whether a file registers a task at its top level (not in a string or a test)."""
    import ast

    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        if "TASKS" not in text:
            return False
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            if any(ast.unparse(d).startswith("TASKS.register") for d in node.decorator_list):
                return True
    return False


def plugin_folder_hint(start: Path | None = None) -> str:
    """A hint naming folders beside ``start`` that hold plugin files, or ''.

    For "unknown task": a user with a folder of plugins who forgot ``--tasks-dir`` is told
    where the registrations are. Only the immediate sub-folders are looked at.
    """
    start = Path(start or Path.cwd())
    try:
        folders = sorted(p for p in start.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return ""
    found = []
    for folder in folders:
        if (folder / "__init__.py").is_file() and folder.name == "tasks":
            continue  # the checkout's built-in tasks package
        if f"dir:{folder.resolve()}" in _loaded:
            continue  # given with --tasks-dir already
        if any(_registers_a_task(f) for f in sorted(folder.glob("*.py"))[:50]):
            found.append(folder.name)
    if not found:
        return ""
    return f"; {', '.join(found)} holds task plugins: pass --tasks-dir {found[0]}"


@contextmanager
def _plugin_errors(what: str) -> Iterator[None]:
    """A broken third-party plugin is one line naming it, not a traceback from inside it."""
    try:
        yield
    except GradbenchError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        # A plugin that calls sys.exit() or raises KeyboardInterrupt while importing is
        # broken, not a request to stop gradbench: report it like any other failure.
        detail = f"{type(error).__name__}: {error}".rstrip(": ")
        raise GradbenchError(f"{what} failed to load: {detail}") from None
