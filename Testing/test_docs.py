"""The documentation stands alone and stays true: generated option tables up to date, every link inside the
repository, the README short and starting with the quick start, no benchmark tries cited by the engine."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import cli_reference  # noqa: E402

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_option_tables_of_cli_md_are_generated_from_the_current_options():
    text = cli_reference.CLI_DOC.read_text()
    assert cli_reference.BEGIN in text, "run: .venv/bin/python tools/cli_reference.py"
    assert cli_reference.updated(text) == text, "docs/cli.md is out of date: run .venv/bin/python tools/cli_reference.py"
    for option in ("--preset", "--head-first-steps", "--overwrite", "--modalities", "--csv", "--progress"):
        assert f"`{option}`" in text


def test_every_link_points_to_a_file_in_the_repository():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists() or ROOT.resolve() not in path.parents:
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_nothing_refers_to_files_outside_the_repository():
    files = DOCS + sorted((ROOT / "pgl_engine").rglob("*.py"))
    assert not [str(f.relative_to(ROOT)) for f in files if "PGL_METHOD" in f.read_text() or "../shared" in f.read_text()]


def test_the_engine_cites_no_benchmark_tries():
    hits = [f"{f.name}:{i}" for f in sorted((ROOT / "pgl_engine").rglob("*.py"))
            for i, line in enumerate(f.read_text().splitlines(), 1) if re.search(r"try [0-9]|README, try", line)]
    assert not hits, hits


def test_the_readme_is_short_and_starts_with_the_two_quick_start_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    start = lines.index("## Quick start")
    block = lines[lines.index("```bash", start) + 1: lines.index("```", lines.index("```bash", start) + 1)]
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]
    assert start < 12  # the quick start comes first, after a short introduction
