"""What every CLI shares: locating ``configs/`` and turning expected errors into one clear line."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def config_dir() -> str:
    """Absolute path of the top-level ``configs/`` directory.

    Hydra resolves a relative ``config_path`` against the Python file, which breaks outside the source tree,
    so the directory is found explicitly: ``$I2I_CONFIG_DIR`` first, then the repository's ``configs/``.
    """
    env = os.environ.get("I2I_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "configs")
    for c in candidates:
        if (c / "train.yaml").is_file():
            return str(c)
    raise SystemExit(f"i2i: error: no configs/train.yaml at {candidates[0]} — install i2i editable from its repository "
                     "(pip install -e .) or set I2I_CONFIG_DIR to the configs/ directory")


def resume_command(argv: list[str] | None = None) -> str:
    """This command line with ``resume=auto`` instead of any ``resume=...`` (``python -m i2i`` spelled out)."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]).name if argv else "train"
    prog = f"python -m {prog}" if prog.startswith("i2i ") else prog
    args = [shlex.quote(a) for a in argv[1:] if not a.startswith(("resume=", "+resume=", "++resume="))]
    return " ".join([prog, *args, "resume=auto"])


def run_cli(fn, cfg) -> None:
    """Run ``fn(cfg)``; known user errors print one line (``I2I_DEBUG=1`` shows the traceback) and exit 2."""
    from i2i.build import USER_ERRORS
    from i2i.engine.signals import TrainingInterrupted

    try:
        fn(cfg)
    except TrainingInterrupted as e:  # SIGINT/SIGTERM: checkpoint written; say how to continue, exit 128 + signal
        print(f"i2i: {e.with_command(resume_command())}", file=sys.stderr)
        sys.exit(e.exit_code)
    except USER_ERRORS as e:
        if os.environ.get("I2I_DEBUG"):
            raise
        print(f"i2i: error: {e}", file=sys.stderr)
        sys.exit(2)
