"""The resolved config of every experiment, as JSON: what a refactoring of configs/ must leave unchanged.

    python scripts/resolved_configs.py --write tests/golden/resolved_configs.json   # record
    python scripts/resolved_configs.py --check tests/golden/resolved_configs.json   # compare (exit 1 on a difference)

Each experiment is composed as ``train experiment=<name>`` and as ``train experiment=<name> debug=smoke``, beside the
plain ``train``, ``i2i-test``, ``i2i-compare`` and ``i2i export`` roots, with every path replaced by a fixed
placeholder so that the result does not depend on the machine. ``tests/test_resolved_configs.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: fixed stand-ins for the machine-dependent paths
PATHS = ["paths.datasets_dir=/datasets", "paths.checkpoints_dir=/checkpoints", "paths.cache_dir=/cache"]


def compositions(config_dir: Path = CONFIGS) -> dict[str, tuple[str, list[str]]]:
    """Name -> (root config, overrides) of everything that is compared."""
    config_dir = Path(config_dir)
    out: dict[str, tuple[str, list[str]]] = {"train": ("train", []), "test": ("test", ["ckpt=/run"]),
                                             "compare": ("compare", []), "export": ("export", ["ckpt=/run"])}
    for path in sorted((config_dir / "experiment").glob("*.yaml")):
        out[path.stem] = ("train", [f"experiment={path.stem}"])
        out[f"{path.stem}+smoke"] = ("train", [f"experiment={path.stem}", "debug=smoke"])
    return out


def resolve_all(config_dir: Path = CONFIGS) -> dict[str, dict]:
    """Name -> resolved config (plain containers) of every composition."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    out = {}
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        for name, (root, overrides) in compositions(config_dir).items():
            cfg = compose(config_name=root, overrides=PATHS + overrides)
            out[name] = OmegaConf.to_container(cfg, resolve=True)
    return out


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """One line per key that was added, removed or changed between two nested dicts."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        where = f"{prefix}{key}"
        if key not in new:
            lines.append(f"{where}: removed (was {old[key]!r})")
        elif key not in old:
            lines.append(f"{where}: added ({new[key]!r})")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            lines.extend(differences(old[key], new[key], where + "."))
        elif old[key] != new[key]:
            lines.append(f"{where}: {old[key]!r} -> {new[key]!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="record the resolved configs in this JSON file")
    group.add_argument("--check", type=Path, help="compare with this JSON file; exit 1 on a difference")
    args = parser.parse_args(argv)
    resolved = resolve_all()
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(resolved, indent=1, sort_keys=True) + "\n")
        print(f"{len(resolved)} resolved configs written to {args.write}")
        return 0
    lines = differences(json.loads(args.check.read_text()), resolved)
    for line in lines:
        print(line)
    print(f"{len(resolved)} configs compared with {args.check}: {len(lines)} difference(s)")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
