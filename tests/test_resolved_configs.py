"""Refactoring configs/ must not change what any experiment resolves to.

``tests/golden/resolved_configs.json`` holds the resolved config of every experiment (plain and ``debug=smoke``) and
of each command's root config, as recorded by ``scripts/resolved_configs.py --write``. A change that is meant to alter
a resolved config re-records the file in the same commit, so the diff shows exactly which keys moved.
"""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "resolved_configs.json"


def _script():
    spec = importlib.util.spec_from_file_location("resolved_configs", REPO / "scripts" / "resolved_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.mark.slow  # composes every experiment twice (about 10 s)
def test_every_experiment_resolves_as_recorded(script):
    golden = json.loads(GOLDEN.read_text())
    resolved = script.resolve_all()
    assert set(resolved) == set(golden)
    assert script.differences(golden, resolved) == []


def test_every_experiment_is_compared(script):
    names = {p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")}
    compared = set(script.compositions())
    assert {f"{n}+smoke" for n in names} | names <= compared


@pytest.mark.slow  # copies configs/ and composes every experiment
def test_a_changed_default_is_reported(script, tmp_path):
    """The comparison sees a one-key change in a shared base config (here: the unpaired data base)."""
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    base = configs / "data" / "unpaired.yaml"
    base.write_text(base.read_text().replace("load_size: 286", "load_size: 290"))
    golden = json.loads(GOLDEN.read_text())
    lines = script.differences(golden, script.resolve_all(configs))
    assert "cut_horse2zebra.data.load_size: 286 -> 290" in lines
    assert not any(line.startswith("cut_horse2zebra+smoke.data.load_size") for line in lines)   # smoke sets its own


def test_differences_names_added_removed_and_changed_keys(script):
    old = {"a": 1, "b": {"c": 2, "d": 3}}
    new = {"a": 1, "b": {"c": 4, "e": 5}}
    assert script.differences(old, new) == ["b.c: 2 -> 4", "b.d: removed (was 3)", "b.e: added (5)"]
