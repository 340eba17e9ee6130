"""Running the CLI in-process from a test: ``cli(args, capsys)``."""

from __future__ import annotations

import pytest

from gradbench.cli import main


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``gradbench ARGS``."""
    with pytest.raises(SystemExit) as stopped:
        main(args)
    out, err = capsys.readouterr()
    return stopped.value.code, out, err
