"""What the CLI shows on the terminal: knowpack's log lines, third-party chatter (off unless -v), progress
bars with ETA. Presentation only; the library logs through `logging` and reports progress through callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from knowpack import output


def setup_logging(level: int) -> None:
    # One handler on the "knowpack" logger, bound to the current stderr (re-bound on every call, so that
    # repeated invocations in one process, as in tests, never write to a closed stream).
    logger = logging.getLogger("knowpack")
    for handler in [h for h in logger.handlers if getattr(h, "_knowpack_cli", False)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
    handler._knowpack_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)


# Environment switches the libraries read when they are first imported (the CLI imports them later, in the
# verbs): their progress bars and their logging. `_third_party_output` also sets what is already imported.
_QUIET_ENV = {
    "TQDM_DISABLE": "1",  # tqdm's own switch: lm-eval's, datasets' and transformers' bars
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
}
_ENV_SET: set[str] = set()
# Libraries that log through the standard logging tree (lm-eval's "pretrained model kwarg is not of type str"
# and "Custom kwargs can be passed to --metadata", once per task and run).
_CHATTY_LOGGERS = (
    "lm_eval",
    "peft",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "filelock",
    "fsspec",
    "urllib3",
)


def third_party_output(verbose: bool) -> None:
    """Third-party chatter off unless -v: progress bars, info and warning logs, Python warnings (FutureWarning
    and the like). knowpack's own progress bars and log lines are unaffected."""
    import os

    output.THIRD_PARTY_OUTPUT = verbose  # transformers' loading bars, programs lm-eval starts
    level = logging.WARNING if verbose else logging.ERROR
    for name, value in _QUIET_ENV.items():
        if not verbose and name not in os.environ:
            os.environ[name] = value
            _ENV_SET.add(name)
        elif (
            verbose and name in _ENV_SET
        ):  # set by a quiet call earlier in this process (tests), not the user
            os.environ.pop(name, None)
            _ENV_SET.discard(name)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger, shown with -v
    warned = logging.getLogger("py.warnings")
    warned.setLevel(level)
    for handler in [h for h in warned.handlers if getattr(h, "_knowpack_cli", False)]:
        warned.removeHandler(handler)
    if verbose:  # a handler of its own: captureWarnings gives the logger a NullHandler when it has none
        handler = _StderrHandler()
        handler._knowpack_cli = True  # type: ignore[attr-defined]
        warned.addHandler(handler)
    if "transformers" in sys.modules:  # imported already: its logging was configured from the environment
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar() if verbose else hf_logging.disable_progress_bar()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (a test runner swaps it per invocation; a
    handler holding the old one would write to a closed stream after the command ended)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _LowerLevelFormatter(logging.Formatter):
    """`warning: ...`, in the style of `error: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace(record.levelname, record.levelname.lower(), 1)


PLAIN_EVERY_S = 60.0
"""Where stderr is not a terminal (a log file, CI), a progress line at most this often, and one at the end."""


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Any]:
    """A rich progress bar with ETA on stderr; yields a `progress(done, total, **fields)` callback whose
    fields (training's epoch, loss, reliability) are shown after the bar, None ones left out. Where stderr
    is not a terminal, plain whole lines instead (a live bar there is squeezed into 80 columns)."""
    if not sys.stderr.isatty():
        with _plain_progress(label) as progress:
            yield progress
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        "eta",
        TimeRemainingColumn(),
        "{task.fields[info]}",
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None, info="")

        def progress(done: int, total: int | None, **fields: Any) -> None:
            info = "  ".join(f"{k} {show_value(v)}" for k, v in fields.items() if v is not None)
            bar.update(task, completed=done, total=total, info=info)

        yield progress


@contextlib.contextmanager
def _plain_progress(label: str) -> Iterator[Any]:
    """`progress_bar` for a stderr that is not a terminal: 'training 20/20 0:29  epoch 5/30  loss 0.003'
    (done/total, minutes:seconds elapsed, the fields) every `PLAIN_EVERY_S` seconds and when it ends."""
    import time

    start = last = time.monotonic()
    state: dict[str, Any] = {}

    def line() -> str:
        done, total, fields = state["done"], state["total"], state["fields"]
        seconds = int(time.monotonic() - start)
        info = "".join(f"  {k} {show_value(v)}" for k, v in fields.items() if v is not None)
        return f"{label} {done}/{'?' if total is None else total} {seconds // 60}:{seconds % 60:02d}{info}"

    def progress(done: int, total: int | None, **fields: Any) -> None:
        nonlocal last
        state.update(done=done, total=total, fields=fields)
        if time.monotonic() - last >= PLAIN_EVERY_S:
            last = time.monotonic()
            print(line(), file=sys.stderr, flush=True)

    yield progress
    if state:
        print(line(), file=sys.stderr, flush=True)


def show_value(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
