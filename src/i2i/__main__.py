"""``python -m i2i train ...`` / ``python -m i2i test ...`` (also usable under ``torchrun -m i2i train ...``)."""

from __future__ import annotations

import sys

COMMANDS = {"train": "i2i.cli.train", "test": "i2i.cli.test", "compare": "i2i.cli.compare"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m i2i {{{'|'.join(COMMANDS)}}} [key=value ...]", file=sys.stderr)
        sys.exit(2)
    import importlib

    module = importlib.import_module(COMMANDS[sys.argv[1]])
    sys.argv = [f"i2i {sys.argv[1]}"] + sys.argv[2:]
    module.main()


if __name__ == "__main__":
    main()
