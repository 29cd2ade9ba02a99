"""A non-editable install carries its migrations: `foxbatch db upgrade` works from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_wheel_install_creates_database_from_another_folder(tmp_path):
    wheel_dir, target, elsewhere = tmp_path / "wheel", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir),
                    str(ROOT)], check=True, capture_output=True)
    [wheel] = wheel_dir.glob("foxbatch-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    db = tmp_path / "x.db"
    code = ("import foxbatch, sys; target = sys.argv.pop(1); "
            "assert foxbatch.__file__.startswith(target), foxbatch.__file__; "
            "from foxbatch.cli import main; main()")
    run = subprocess.run([sys.executable, "-c", code, str(target), "--db", f"sqlite:///{db}",
                          "db", "upgrade"], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "head" in run.stdout
    assert db.exists()
