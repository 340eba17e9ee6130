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


def load_plugins(tasks_dir: str | Path | None = None) -> None:
    """Import every plugin once; safe to call repeatedly."""
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
        with _plugin_errors(f"task plugin {str(path)!r}"):
            spec.loader.exec_module(module)


@contextmanager
def _plugin_errors(what: str) -> Iterator[None]:
    """A broken third-party plugin is one line naming it, not a traceback from inside it."""
    try:
        yield
    except GradbenchError:
        raise
    except Exception as error:
        raise GradbenchError(f"{what} failed to load: {type(error).__name__}: {error}") from error
