"""`knowpack report`: tables and plots from finished runs, sweeps, capacity searches and plans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from knowpack.cli.options import OUT
from knowpack.report import write_report


def report(
    dirs: Annotated[list[Path], typer.Argument(help="Run or sweep folders.")],
    out: Annotated[Path | None, OUT] = None,
) -> None:
    """Tables and plots from result files (run, sweep, capacity folders): report.html, report.md, PNGs.

    Reads config.yaml, train.json and eval.json of every finished run under DIRS; never runs a model. OUT
    defaults to the first DIR.
    """
    folder = write_report(dirs, out or dirs[0])
    for plan in (d / "plan.json" for d in dirs):  # a plan folder's answer, as the report's top states it
        if plan.is_file():
            typer.echo(f"plan: {json.loads(plan.read_text(encoding='utf-8'))['answer']}")
    typer.echo(f"report: {folder / 'report.html'}")
