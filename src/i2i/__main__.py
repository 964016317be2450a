"""``python -m i2i <command> ...``: the same dispatcher as the ``i2i`` command (also ``torchrun -m i2i train ...``)."""

from __future__ import annotations

from i2i.cli.main import main

if __name__ == "__main__":
    main(prog="python -m i2i")
