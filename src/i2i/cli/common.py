"""What every CLI shares: locating ``configs/`` and turning expected errors into one clear line."""

from __future__ import annotations

import os
import shlex
import sys
import warnings
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
    args = [shlex.quote(a) for a in argv[1:] if not a.startswith(("resume=", "+resume=", "++resume="))]
    return " ".join([prog, *args, "resume=auto"])


def fail(message: str) -> None:
    """Print ``i2i: error: <message>`` (one line) on stderr and exit with status 2."""
    print(f"i2i: error: {message}", file=sys.stderr)
    sys.exit(2)


_PACKAGE = str(Path(__file__).resolve().parents[1])
_default_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """i2i's own warnings as one ``i2i: warning: ...`` line; others as Python formats them."""
    if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(_PACKAGE):
        return f"i2i: warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


def run_cli(fn, cfg, also: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``fn(cfg)``; known user errors print one line (``I2I_DEBUG=1`` shows the traceback) and exit 2.

    Args:
        fn: the command.
        cfg: its config.
        also: more exception types to report that way (i2i-compare: the metrics package's ValueError & co.).
    """
    from i2i.data.errors import DataError
    from i2i.engine.loop import NonFiniteLossError
    from i2i.engine.signals import TrainingInterrupted
    from i2i.engine.state import CheckpointError
    from i2i.errors import ConfigError, RunDirError

    user_errors = (DataError, CheckpointError, NonFiniteLossError, ConfigError, RunDirError)  # one line, no traceback

    warnings.formatwarning = _format_warning
    try:
        fn(cfg)
    except TrainingInterrupted as e:  # SIGINT/SIGTERM: checkpoint written; say how to continue, exit 128 + signal
        print(f"i2i: {e.with_command(resume_command())}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (*user_errors, *also) as e:
        if os.environ.get("I2I_DEBUG"):
            raise
        fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def override_hint(arg: str, err: Exception) -> str:
    """The one-line message for a command-line override Hydra's grammar rejects, with the quoting that works."""
    key, _, value = arg.partition("=")
    quoted = f"{key}='\"{value}\"'" if '"' not in value else f"\"{key}='{value}'\""
    if any(ord(c) > 127 for c in value):
        return (f"{arg}: Hydra reads non-ASCII characters only inside quotes — quote the value for Hydra within "
                f"the shell's quotes: {quoted}")
    lines = [line for line in str(getattr(err, "message", err)).splitlines() if line.strip()]
    reason = lines[0].strip() if lines else "syntax error"
    return (f"{arg}: Hydra cannot parse this override ({reason}) — fix its syntax, or quote a value with special "
            f"characters for Hydra within the shell's quotes: {quoted}")


def check_overrides(argv: list[str] | None = None) -> None:
    """Exit 2 with one line (instead of Hydra's lexer report) when a command-line override cannot be parsed.

    Hydra parses the overrides before the command runs, so this runs first, with Hydra's own parser; anything
    else (``--help``, ``--cfg job``) is left to Hydra.
    """
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        known, rest = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    except (Exception, SystemExit):
        return
    parser = OverridesParser.create()
    for arg in [*(known.overrides or ()), *(a for a in rest if "=" in a and not a.startswith("-"))]:
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as e:
            if os.environ.get("I2I_DEBUG"):
                raise
            fail(override_hint(arg, e))
