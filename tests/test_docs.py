"""The project documents itself: what the code cites is in the repository (docs/design.md, docs/papers.md)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITING = ("src", "tests", "scripts", "bench", "configs", "Makefile", "pyproject.toml")
OUTPUTS = {"report.md"}
"""Markdown names the code writes rather than cites (`knowpack report` writes report.md)."""
TEXT = {".py", ".yaml", ".yml", ".toml", ".md", ".sh", ".jinja", ".txt", ".cfg"}
SECTION = re.compile(r"docs/(design|papers)\.md §(\d+(?:\.\d+)?)")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", *CITING], cwd=ROOT, capture_output=True, text=True, check=True)
    paths = [ROOT / line for line in out.stdout.splitlines()]
    return [p for p in paths if p.is_file() and (p.suffix in TEXT or p.name == "Makefile")]


def test_no_source_file_cites_a_document_outside_the_repository():
    files = _tracked()
    names = {p.name for p in ROOT.rglob("*.md") if ".git" not in p.parts and ".venv" not in p.parts}
    cited = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="ignore")
        for ref in re.findall(r"[A-Za-z0-9_./-]+\.md\b", text):
            missing = not (ROOT / ref).is_file() and Path(ref).name not in names
            if missing and Path(ref).name not in OUTPUTS:
                cited.append(f"{path.relative_to(ROOT)}: {ref}")
    assert len(files) > 100 and not cited, cited


def test_every_cited_section_exists():
    headings = {}
    for doc in ("design", "papers"):
        text = (ROOT / "docs" / f"{doc}.md").read_text(encoding="utf-8")
        headings[doc] = set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", text, flags=re.M))
    cited = {
        (m[0], m[1], str(p.relative_to(ROOT))) for p in _tracked() for m in SECTION.findall(p.read_text())
    }
    cited |= {
        (m[0], m[1], doc)
        for doc in ("design", "papers")
        for m in SECTION.findall((ROOT / "docs" / f"{doc}.md").read_text())
    }
    missing = sorted(
        f"{where}: docs/{doc}.md §{number}" for doc, number, where in cited if number not in headings[doc]
    )
    assert len(cited) > 20 and not missing, missing
