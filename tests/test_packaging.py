"""Installed as a user installs it: a wheel built from the checkout, in a fresh virtualenv, used from
a directory that holds a `state.py`, `stack.py` and `orb.py` of the user's own.

The wheel must hold one top-level package, `cohort` (no bare `stack`, `state`, `orb`,
`replication` or `samples`), and `cohort demo` must pass there. The fresh venv gets our runtime
dependencies (Pyro5, msgpack, cryptography) from the test's own environment through a `.pth`
file, so the test needs no network; cohort itself comes only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BARE = ("stack", "state", "orb", "replication", "samples")
pytestmark = pytest.mark.timeout(300)


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    wheels = tmp / "wheels"
    out = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), str(src)],
        tmp,
        180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = wheels.glob("cohort-*.whl")
    venv = tmp / "venv"
    out = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    assert out.returncode == 0, out.stderr
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp)
    ours = sysconfig.get_path("purelib")  # where this environment's Pyro5 and msgpack live
    (Path(site.stdout.strip()) / "_deps.pth").write_text(ours + "\n")
    out = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        tmp,
        180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    user = tmp / "user"
    user.mkdir()
    for name in ("state", "stack", "orb"):  # a user's own modules with our folders' names
        (user / f"{name}.py").write_text(
            f'raise RuntimeError("the user\'s own {name}.py was imported by cohort")\n'
        )
    return {"wheel": wheel, "python": python, "cohort": venv / "bin" / "cohort", "user": user}


def test_the_wheel_holds_one_top_level_package(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"cohort"}, sorted(tops)
    assert "cohort/py.typed" in names
    assert "cohort/samples/counter.py" in names and "cohort/stack/layers/nak.py" in names


def test_bare_names_are_not_importable_from_the_installed_wheel(installed, tmp_path):
    for name in BARE:
        out = _run([str(installed["python"]), "-c", f"import {name}"], tmp_path)
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, (name, out.stdout)


def test_the_facade_and_the_version(installed):
    code = (
        "import cohort; print(cohort.__version__); "
        "assert issubclass(cohort.NoQuorum, cohort.CohortError); "
        "assert all(hasattr(cohort, n) for n in cohort.__all__)"
    )
    out = _run([str(installed["python"]), "-c", code], installed["user"])
    assert out.returncode == 0, out.stderr
    version = out.stdout.strip()
    out = _run([str(installed["cohort"]), "--version"], installed["user"])
    assert out.returncode == 0 and out.stdout.strip() == f"cohort {version}", out


def test_cohort_demo_passes_outside_the_repository(installed):
    """Beside the user's own state.py, stack.py and orb.py; the replicas it spawns import the
    installed samples (cohort.samples.bank:Bank)."""
    out = _run(
        [str(installed["cohort"]), "demo", "--seconds", "3", "--clients", "2"],
        installed["user"],
        240,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "money conserved" in out.stdout or "conserved" in out.stdout, out.stdout[-2000:]
