"""The wheel built from the repository installs in a fresh venv and runs the example app's
tests there, with the source tree out of reach.

``python -m build`` builds the sdist, then the wheel *from the sdist*, so a file the wheel
needs but the sdist lacks fails the build. Only the SQLite half of the example's tests runs
against the wheel (PostgreSQL is already raced in-tree, by the same tests), to stay within
about three minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".payguard", "__pycache__", "*.egg-info",
                                     "build", "dist", "artifacts", ".mypy_cache",
                                     ".ruff_cache", ".pytest_cache", "*.db", "*.db-*")


def _clean_checkout(into: Path) -> Path:
    """The repository's tracked files as they are in the working tree (no .venv, no data
    directories, no build leftovers): what a fresh clone would build from. Outside a git
    checkout (an unpacked archive), the tree minus what is never source."""
    if not (ROOT / ".git").exists():
        shutil.copytree(ROOT, into, ignore=_NOT_SOURCE)
        return into
    listed = _run("git", "ls-files", "-z", cwd=ROOT).split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


def test_the_wheel_installs_in_a_fresh_venv_and_runs_the_example(tmp_path: Path) -> None:
    checkout = _clean_checkout(tmp_path / "checkout")
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--outdir", dist, checkout, cwd=tmp_path, timeout=600)
    (wheel,) = dist.glob("payguard-*.whl")
    (sdist,) = dist.glob("payguard-*.tar.gz")

    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
    for needed in ("payguard/py.typed", "payguard/fastapi/__init__.py",
                   "payguard/store/tables.py", "payguard/store/migrations/env.py",
                   "payguard/store/migrations/versions/0001_initial_schema.py",
                   "payguard/api/static/index.html"):
        assert needed in files, f"{needed} missing from the wheel"
    assert not any(f.startswith(("tests/", "examples/")) for f in files)
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "src/payguard/py.typed"} <= names

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", wheel, "pytest==9.2.0", cwd=tmp_path,
         timeout=600)

    # The example, copied away from the repository: nothing of the source tree is importable.
    shop = tmp_path / "shop"
    shutil.copytree(checkout / "examples" / "shop", shop,
                    ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = _run(python, "-c", "import payguard, payguard.fastapi; print(payguard.__file__)",
                 cwd=shop, env=env).strip()
    assert Path(where).is_relative_to(venv), where
    assert not Path(where).is_relative_to(ROOT)

    out = _run(python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
               "-k", "sqlite", cwd=shop, env=env, timeout=600)
    assert "5 passed" in out, out
