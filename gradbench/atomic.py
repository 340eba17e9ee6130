"""Writing a results file whole or not at all: through a ``.part`` file and a rename."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from gradbench.errors import GradbenchError


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a ``.part`` file, so a reader never sees half of
    it; a failure is a one-line GradbenchError and leaves no partial file. The part file
    is named after this process, so two writers never write into each other's."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as error:
        with suppress(OSError):
            tmp.unlink()
        raise GradbenchError(f"cannot write {path}: {error.strerror}") from None
