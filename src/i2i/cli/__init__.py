"""Command-line entry points (`train`, `i2i-test`, `python -m i2i ...`): thin Hydra wrappers over build.py."""
