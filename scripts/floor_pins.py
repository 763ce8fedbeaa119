"""Print the lowest versions pyproject.toml allows, as pins: `make test-floor` installs them, so that the
floors in pyproject.toml are the versions CI tests (one place says what they are).

    python scripts/floor_pins.py     # transformers==5.0.0 peft==0.18.0 ...

Only the requirements written `name>=version` are pinned; the others resolve as usual.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def floor_pins() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?>=([0-9][^,;\s]*)", requirement.strip())
        if match:
            pins.append(f"{match.group(1)}{match.group(2) or ''}=={match.group(3)}")
    return pins


if __name__ == "__main__":
    sys.stdout.write(" ".join(floor_pins()) + "\n")
