"""Every ```python block in docs/*.md runs.

The blocks of one page run in order in one namespace (a page builds on its
earlier examples), in a fresh Python process whose working folder is an
empty temporary folder, with one torch/OpenMP thread. A block is skipped only
when the line before its fence (blank lines aside) is ``<!-- no-test -->``.
Tracebacks point at the Markdown file and line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
NO_TEST = "<!-- no-test -->"
#: Skipping is for the rare example that cannot run here; keep it rare.
MAX_SKIPPED = 3

_RUNNER = r"""
import json, sys
ns = {"__name__": "__main__"}
for block in json.load(sys.stdin):
    # Pad with newlines so tracebacks give the line in the Markdown file (and show it).
    exec(compile("\n" * block["line"] + block["code"], block["file"], "exec"), ns)
"""


def python_blocks(text: str) -> tuple[list[tuple[int, str]], int]:
    """``([(first code line index (0-based), code)], number skipped)`` of a Markdown text's python blocks."""
    lines = text.splitlines()
    blocks, skipped, i = [], 0, 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```python"):
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        if previous == NO_TEST:
            skipped += 1
        else:
            blocks.append((i + 1, textwrap.dedent("\n".join(lines[i + 1:end]))))
        i = end + 1
    return blocks, skipped


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if python_blocks(p.read_text(encoding="utf-8"))[0])


def test_block_extraction():
    text = ("x\n```python\na = 1\n```\n\n<!-- no-test -->\n\n```python\nraise SystemExit\n```\n"
            "  ```python\n  b = 2\n  ```\n")
    blocks, skipped = python_blocks(text)
    assert blocks == [(2, "a = 1"), (11, "b = 2")] and skipped == 1


def test_docs_have_examples_and_few_skips():
    pages = [p.name for p in _pages()]
    assert "python-api.md" in pages
    skipped = sum(python_blocks(p.read_text(encoding="utf-8"))[1] for p in DOCS.glob("*.md"))
    assert skipped <= MAX_SKIPPED, f"{skipped} doc examples are marked {NO_TEST}; make them runnable instead"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_doc_examples_run(page, tmp_path):
    blocks, _ = python_blocks(page.read_text(encoding="utf-8"))
    payload = json.dumps([{"file": str(page), "line": line, "code": code} for line, code in blocks])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", _RUNNER], input=payload, capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, f"{page.name}: an example failed:\n{proc.stderr[-4000:]}"
