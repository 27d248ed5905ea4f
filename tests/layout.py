"""The package layout the tests check: each package of `cohort` and the folder it is built from
(pyproject.toml's package-dir), and every module of them by its dotted name."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: package -> its folder (the mapping of pyproject.toml's package-dir)
FOLDERS = {
    "cohort": "cohort",
    "cohort.stack": "stack",
    "cohort.state": "state",
    "cohort.replication": "replication",
    "cohort.orb": "orb",
    "cohort.samples": "samples",
}
BARE = {"stack", "state", "replication", "orb", "samples"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()
