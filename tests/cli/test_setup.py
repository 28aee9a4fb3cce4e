"""`.ci/setup` picks the Python to install into: the given one when it takes packages, else a project
`.venv/` that every `.ci` command then runs in. Run on a copy of `.ci/` (it only makes environments)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import PACK_ROOT

SYSTEM_PYTHON = Path("/usr/bin/python3")


def _project(tmp_path: Path) -> Path:
    shutil.copytree(PACK_ROOT / ".ci", tmp_path / "project" / ".ci")
    return tmp_path / "project"


def _run(project: Path, python: str, *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python}
    return subprocess.run(["bash", *command], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def _choose(project: Path, python: str) -> tuple[str, str]:
    """(what .ci/environment said, the interpreter .ci/python then runs)."""
    chosen = _run(project, python, ".ci/environment")
    assert chosen.returncode == 0, chosen.stderr
    runs = _run(project, python, ".ci/python", "-c", "import sys; print(sys.executable)")
    assert runs.returncode == 0, runs.stderr
    return chosen.stdout, runs.stdout.strip()


@pytest.mark.skipif(not os.access(sysconfig.get_path("purelib"), os.W_OK), reason="this Python's site-packages are read-only")
def test_a_python_that_takes_packages_is_used_as_it_is(tmp_path):
    project = _project(tmp_path)
    said, runs = _choose(project, sys.executable)
    assert said.strip().splitlines() == [f"setup: installing into {sys.executable} (Python {sys.version.split()[0]})"]
    assert runs == sys.executable and not (project / ".venv").exists()


@pytest.mark.skipif(not (SYSTEM_PYTHON.exists() and subprocess.run(
    [str(SYSTEM_PYTHON), "-c", "import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"],
).returncode == 0), reason="no externally managed (PEP 668) system Python at /usr/bin/python3")
def test_an_externally_managed_system_python_gets_a_project_environment(tmp_path):
    project = _project(tmp_path)
    said, runs = _choose(project, str(SYSTEM_PYTHON))
    assert "is managed by the system (PEP 668): making a project environment in .venv/" in said
    assert Path(runs).parent == project / ".venv" / "bin"
    assert _run(project, "python-not-used", ".ci/python", "-m", "pip", "--version").returncode == 0
    said_again, _ = _choose(project, str(SYSTEM_PYTHON))
    assert said_again.strip().splitlines()[0].startswith("setup: using the project environment .venv/")
