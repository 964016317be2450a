"""``i2i <command> [key=value ...]``: one entry point for every command (also ``python -m i2i <command>``).

::

    i2i train experiment=cut_horse2zebra           # = train ...
    i2i test ckpt=checkpoints/cut_horse2zebra      # = i2i-test ...
    i2i compare fake=<dir> real=<dir>              # = i2i-compare ...
    i2i export ckpt=checkpoints/cut_horse2zebra format=onnx   # = i2i-export ...

There is deliberately no ``test`` console script: with the environment's ``bin/`` on ``PATH`` it would shadow
``/usr/bin/test`` for every program that runs ``test`` (``find -exec test``, ``xargs test``, Makefiles).
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module with ``main()``, one-line summary)
COMMANDS = {
    "train": ("i2i.cli.train", "train a model (experiment=<name> [key=value ...])"),
    "test": ("i2i.cli.test", "translate images with a checkpoint (ckpt=<run | file> data=<dataset | folder>)"),
    "compare": ("i2i.cli.compare", "FID / KID / SWD / precision-recall of one folder against another"),
    "export": ("i2i.cli.export", "write the generator as TorchScript, ONNX or a published latest_net_G.pth"),
}


def usage(prog: str = "i2i") -> str:
    """The help text: the commands and one line on each."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: {prog} <command> [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", f"'{prog} <command> --help' shows the command's configuration (Hydra)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "i2i") -> None:
    """Run ``<command>`` with the remaining arguments as its Hydra overrides.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).
        prog: how the program was invoked (``i2i`` or ``python -m i2i``); the command sees ``"<prog> <command>"``
            as ``sys.argv[0]``, so messages that repeat the command line (``resume=auto``) name it correctly.

    Exits 0 after ``--help``, 2 without a command or with an unknown one (one line).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(prog), file=sys.stderr)
        sys.exit(2)
    if args[0] in ("-h", "--help", "help"):
        print(usage(prog))
        sys.exit(0)
    command = args[0]
    if command not in COMMANDS:
        print(f"{prog}: error: unknown command {command!r} — use one of {', '.join(COMMANDS)} ({prog} --help)",
              file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"{prog} {command}", *args[1:]]
    module.main()
