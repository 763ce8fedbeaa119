"""Whether third-party libraries may print while knowpack uses them, and a block that keeps them quiet.

`THIRD_PARTY_OUTPUT` is off, so that transformers' "Loading weights" bars and the programs lm-eval starts
print nothing; `knowpack -v` turns it on (`knowpack.cli.console.third_party_output`). Read it as
`output.THIRD_PARTY_OUTPUT` (the module's attribute), so that a change is seen everywhere.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

THIRD_PARTY_OUTPUT = False
"""Whether third-party libraries may print while knowpack uses them (transformers' "Loading weights" bar,
the programs lm-eval starts): off, so that the library prints nothing; `knowpack -v` turns it on
(`knowpack.cli.console.third_party_output`)."""


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """For the block, unless `THIRD_PARTY_OUTPUT`: transformers' progress bars (loading weights, dequantizing
    a GGUF) off, and the libraries' deprecation warnings (PEFT asking for transformers'
    `is_gradient_checkpointing`) not shown; both as before after it."""
    from transformers.utils import logging as hf_logging

    if THIRD_PARTY_OUTPUT:
        yield
        return
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
