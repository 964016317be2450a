"""``<run>/samples/index.html``: the sample grids of a run, newest first, each with its step."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from urllib.parse import quote

#: sample grids written by the training loop (``step_XXXXXXXX.png``)
_SAMPLE = re.compile(r"step_(\d+)\.png")
#: widest an image is shown (a narrower one keeps its natural size; every image links to its file)
MAX_WIDTH = 1280


def sample_files(samples_dir: str | Path) -> list[tuple[int, str]]:
    """(step, file name) of every sample grid in ``samples_dir``, newest (highest step) first."""
    samples_dir = Path(samples_dir)
    if not samples_dir.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in samples_dir.iterdir() if (m := _SAMPLE.fullmatch(p.name))]
    return sorted(found, reverse=True)


def _entry(step: int, name: str) -> str:
    url = html.escape(quote(name), quote=True)
    return (f'<h3>step {step}</h3>\n<p><a href="{url}"><img src="{url}" alt="step {step}" '
            f'style="max-width:min(100%,{MAX_WIDTH}px);height:auto"></a></p>\n')


def samples_page(run_name: str, samples: list[tuple[int, str]], checkpoint: tuple[int, str] | None = None) -> str:
    """The HTML of the samples index.

    Args:
        run_name: shown as the title.
        samples: (step, file name relative to the page), in the order shown.
        checkpoint: (step, path relative to the run directory, e.g. ``ckpt/last.pt``) of the latest checkpoint,
            if any; the page sits in ``<run>/samples/``.
    """
    title = html.escape(f"{run_name}: samples")
    latest = f"latest step {samples[0][0]}" if samples else "no samples yet"
    if checkpoint is not None:
        step, path = checkpoint
        url = html.escape("../" + quote(path), quote=True)
        latest += f"; checkpoint <a href=\"{url}\">{html.escape(path)}</a> at step {step}"
    body = "".join(_entry(step, name) for step, name in samples)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
            f"<body>\n<h1>{title}</h1>\n<p>{len(samples)} grid(s), newest first; {latest}</p>\n{body}</body></html>\n")


def write_samples_index(samples_dir: str | Path, run_name: str, checkpoint: tuple[int, str] | None = None) -> Path:
    """Write ``<samples_dir>/index.html`` listing every ``step_*.png`` there, newest first (temp file + rename).

    Args:
        samples_dir: the run's ``samples/`` folder.
        run_name: the run's name (the page title).
        checkpoint: (step, path relative to the run directory) of the latest checkpoint, if any.
    """
    path = Path(samples_dir) / "index.html"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(samples_page(run_name, sample_files(samples_dir), checkpoint), encoding="utf-8")
    os.replace(tmp, path)
    return path
