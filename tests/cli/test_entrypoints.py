"""Installed commands: one ``i2i <command>`` dispatcher (also ``python -m i2i``), the ``i2i-*`` scripts, and no
``test`` script (it would shadow ``/usr/bin/test`` for ``find -exec test`` and ``xargs test``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from i2i.cli import main as dispatcher
from i2i.cli.common import resume_command

BIN = Path(sys.executable).parent
SUBCOMMANDS = ["train", "test", "compare", "export"]


def _scripts() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.dist and ep.dist.name == "i2i"}


def test_installed_console_scripts():
    scripts = _scripts()
    assert "test" not in scripts and not (BIN / "test").exists()
    assert scripts["i2i"] == "i2i.cli.main:main"
    assert {"train", "i2i-train", "i2i-test", "i2i-compare", "i2i-export"} <= set(scripts)
    for name in scripts:
        assert (BIN / name).is_file(), f"{name} is declared but not installed: pip install --no-deps -e ."


def _capture(monkeypatch) -> dict:
    """Replace every subcommand's ``main`` with a recorder of ``sys.argv``."""
    seen: dict = {}
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the dispatcher rewrites sys.argv: restore it afterwards
    for name, (module, _) in dispatcher.COMMANDS.items():
        monkeypatch.setattr(f"{module}.main", lambda name=name: seen.update(name=name, argv=list(sys.argv)))
    return seen


@pytest.mark.parametrize("command", SUBCOMMANDS)
@pytest.mark.parametrize("prog", ["i2i", "python -m i2i"])
def test_each_subcommand_is_dispatched_with_its_arguments(monkeypatch, command, prog):
    seen = _capture(monkeypatch)
    dispatcher.main([command, "a=1", "b=x y"], prog=prog)
    assert seen == {"name": command, "argv": [f"{prog} {command}", "a=1", "b=x y"]}


@pytest.mark.parametrize("prog", ["i2i", "python -m i2i"])
def test_the_resume_command_of_a_dispatched_train_reaches_train_again(monkeypatch, prog):
    seen = _capture(monkeypatch)
    dispatcher.main(["train", "experiment=cut_horse2zebra", "name=a b", "resume=null"], prog=prog)
    line = resume_command(seen["argv"])
    assert line.endswith("experiment=cut_horse2zebra 'name=a b' resume=auto") and "resume=null" not in line
    words = shlex.split(line)
    start = words.index("i2i") + 1
    assert words[:start] in (["i2i"], ["python", "-m", "i2i"]) and words[start] == "train"


def test_help_lists_the_subcommands_and_an_unknown_one_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        dispatcher.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith("usage: i2i <command> [key=value ...]")
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ")] == SUBCOMMANDS
    with pytest.raises(SystemExit) as stop:
        dispatcher.main([])
    assert stop.value.code == 2 and "commands:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        dispatcher.main(["bogus", "x=1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.splitlines() == [
        "i2i: error: unknown command 'bogus' — use one of train, test, compare, export (i2i --help)"]


def _run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_the_installed_i2i_command(tmp_path):
    proc = _run(str(BIN / "i2i"), "--help", cwd=tmp_path)
    assert proc.returncode == 0 and all(f"  {c} " in proc.stdout for c in SUBCOMMANDS)
    proc = _run(str(BIN / "i2i"), "bogus", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "unknown command" in proc.stderr
    proc = _run(sys.executable, "-m", "i2i", "export", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "format: ???" in proc.stdout and "ckpt: ???" in proc.stdout
    proc = _run(sys.executable, "-m", "i2i", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: python -m i2i <command>")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["i2i", "python"])
def test_i2i_train_and_test_through_the_dispatcher(tmp_path, command):
    head = [str(BIN / "i2i")] if command == "i2i" else [sys.executable, "-m", "i2i"]
    env = {"I2I_DATASETS_DIR": str(tmp_path / "datasets")}
    proc = _run(*head, "train", "experiment=cut_horse2zebra", "debug=smoke", "train.max_steps=1", "name=r",
                cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "r" / "ckpt" / "last.pt").is_file()
    proc = _run(*head, "test", "ckpt=checkpoints/r", "data=synthetic", "data.synthetic.size=36", "out_dir=res",
                cwd=tmp_path, env=env)
    assert proc.returncode == 0 and any((tmp_path / "res" / "fake_B").iterdir()), proc.stderr[-2000:]
