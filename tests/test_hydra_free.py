"""Hydra and OmegaConf stay in build.py and the CLI: models, losses, methods, data, engine and metrics take plain
arguments."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "i2i"
ALLOWED = {SRC / "build.py"} | set((SRC / "cli").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_hydra_or_omegaconf_import_outside_build_and_cli():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p not in ALLOWED and imported_modules(p) & {"hydra", "omegaconf"}]
    assert offenders == []


def test_importing_the_library_does_not_load_hydra():
    code = ("import sys, i2i.methods.cut, i2i.engine.loop, i2i.data.unaligned, i2i.models.generators, "
            "i2i.engine.translate; print('hydra' in sys.modules or 'omegaconf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
