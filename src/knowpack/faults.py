"""Named points of a run's life, where a test can stop the process outright, to prove that every verb
resumes from a kill at any point (docs/design.md, "Faults").

Two environment variables, both unset in normal use (then `point` costs one dictionary look-up):

    KNOWPACK_KILL_AT=NAME[@K]   the process SIGKILLs itself the K-th time (default: the first) it passes
                                the point called NAME: no handler, no `finally`, no flush runs, as when a
                                machine dies or a scheduler kills a job outright
    KNOWPACK_POINTS=FILE        every point passed is appended to FILE, one name a line: the points of an
                                uninterrupted run, which a test then kills at one by one

The points sit after each stage of a run, inside each atomic write (the temporary file written, not yet
renamed), between the renames of an atomic folder, inside cleanups and inside appends (half a line
written). tests/test_faults.py kills every verb at every point its run passes.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_AT = "KNOWPACK_KILL_AT"
POINTS = "KNOWPACK_POINTS"
_passed: Counter[str] = Counter()


def point(name: str) -> None:
    """Mark that the process has reached `name`; record it or die here if the environment says so."""
    kill, trace = os.environ.get(KILL_AT), os.environ.get(POINTS)
    if kill is None and trace is None:
        return
    _passed[name] += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{name}\n")
    if kill:
        target, _, count = kill.rpartition("@") if "@" in kill else (kill, "", "1")
        if target == name and _passed[name] == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
