"""The documentation site builds with ``mkdocs build --strict``: no dead links or anchors.

mkdocs is in the ``test`` extra (``pip install ".[test]"``), so this runs in CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path):
    import mkdocs  # noqa: F401 - a missing mkdocs is a failure: it is in the test extra

    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                             "--config-file", str(ROOT / "mkdocs.yml")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").is_file()
