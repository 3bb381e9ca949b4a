"""The wheel ships the top-level templates/ folder and the board's static files, so a
non-editable install finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_contains_templates_and_runner(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("codexw-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (REPO / "templates").glob("*.md"):
        assert f"codexw/templates/{template.name}" in names
    assert "codexw/runner.py" in names
    # The board's page, script and styles ship in the package (served offline, no CDN).
    for static in (REPO / "codexw" / "board" / "static").iterdir():
        assert f"codexw/board/static/{static.name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "codexw = codexw.cli.app:main" in text
