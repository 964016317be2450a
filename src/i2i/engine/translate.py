"""Inference: translate a folder of images and write ``fake_B/``, ``real_A/`` and an HTML gallery.

What ``i2i-test`` writes into its output folder (:data:`OUTPUTS`) is removed before it writes again
(:func:`clear_outputs`), so a folder never mixes two runs' images; anything else in the folder is left alone.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from i2i.data.folder import crop_to_size
from i2i.errors import ConfigError
from i2i.metrics.progress import note, progress_bar
from i2i.utils.images import save_image

#: what ``i2i-test`` writes into its output folder: folders of images, then files (and their temporary files)
OUTPUT_DIRS = ("fake_B", "real_A")
OUTPUT_FILES = ("index.html", "info.json", "metrics.json")
OUTPUTS = OUTPUT_DIRS + OUTPUT_FILES

#: widest an image is shown in the gallery (smaller ones keep their size; each links to the full-size file)
GALLERY_MAX_WIDTH = 512


def size_batches(dataset, batch_size: int = 1):
    """Collated batches of consecutive items, in dataset order: at most ``batch_size`` items, all of one padded size.

    Images of different sizes cannot share a tensor, so a batch ends early where the size changes.
    """
    buf: list[dict] = []
    for i in range(len(dataset)):
        item = dataset[i]
        if buf and (len(buf) == batch_size or buf[0]["A"].shape != item["A"].shape):
            yield default_collate(buf)
            buf = []
        buf.append(item)
    if buf:
        yield default_collate(buf)


@torch.no_grad()
def iter_translations(G: torch.nn.Module, dataset, device: torch.device, batch_size: int = 1, prepare=None,
                      progress: bool = False):
    """Translate every dataset item; yield ``(path, real, fake)``, both [C, h, w] in [-1, 1] at the file's size.

    The output is cropped back to the input's size (undoing the dataset's padding) and resized back when the
    dataset resized the input. Images of any sizes mix with any ``batch_size`` (see :func:`size_batches`).
    ``progress`` shows a bar on stderr (removed when done, so an outer bar stays intact).
    """
    with progress_bar(desc="translating", total=len(dataset), enabled=progress) as bar:
        for batch in size_batches(dataset, batch_size):
            x = batch["A"].to(device)  # [B, C, H', W']
            fake = G(prepare(x, batch) if prepare is not None else x)
            for i in range(x.shape[0]):
                h, w = batch["orig_size"][i].tolist()
                fh, fw = batch["file_size"][i].tolist()
                real_i, fake_i = crop_to_size(x[i], h, w), crop_to_size(fake[i], h, w)
                if (fh, fw) != (h, w):
                    real_i, fake_i = (F.interpolate(t[None].float(), size=(fh, fw), mode="bicubic",
                                                    align_corners=False)[0] for t in (real_i, fake_i))
                bar.update(1)
                yield batch["A_path"][i], real_i, fake_i


def translate_dataset(G: torch.nn.Module, dataset, out_dir: str | Path, device: torch.device, batch_size: int = 1,
                      prepare=None, about: dict | None = None, progress: bool = True) -> list[str]:
    """Translate every item of an :class:`~i2i.data.folder.ImageFolderDataset`.

    Each output is cropped back to the input's size (and resized back when the dataset resized it), then saved as
    ``<out_dir>/fake_B/<stem>.png`` beside ``<out_dir>/real_A/<stem>.png``; ``<out_dir>/index.html`` shows both.

    Args:
        G: generator (eval mode).
        dataset: items with 'A', 'A_path', 'orig_size', 'file_size'.
        out_dir: output directory.
        device: where G runs.
        batch_size: images per forward pass (a batch holds consecutive images of one size).
        prepare: optional ``f(x, batch) -> x`` applied to G's input (e.g. the test-time attention placeholder).
        about: what produced the images, shown in the gallery (see :func:`write_gallery`).
        progress: show a progress bar on stderr.

    Returns:
        The stems written, in order.
    """
    out_dir = Path(out_dir)
    stems: list[str] = []
    seen: dict[str, int] = {}
    for path, real_i, fake_i in iter_translations(G, dataset, device, batch_size, prepare, progress=progress):
        stem = Path(path).stem
        if stem in seen:  # two inputs with one name (recursive folders): keep both
            seen[stem] += 1
            stem = f"{stem}_{seen[stem]}"
        else:
            seen[stem] = 0
        save_image(fake_i, out_dir / "fake_B" / f"{stem}.png")
        save_image(real_i, out_dir / "real_A" / f"{stem}.png")
        stems.append(stem)
    write_gallery(out_dir, stems, about or {})
    return stems


# ---------------------------------------------------------------------------------------------- the gallery
def provenance(about: dict) -> str:
    """One sentence on what produced the images: checkpoint, its step and epoch, the input folder."""
    parts = [f"checkpoint {about.get('checkpoint', '?')}"]
    if about.get("source") == "published":
        parts.append("(a published generator: no step recorded)")
    elif about.get("step") is not None:
        parts.append(f"at step {about['step']}, epoch {about.get('epoch', '?')}")
    if about.get("input_dir"):
        parts.append(f"— inputs from {about['input_dir']}")
    return " ".join(parts)


def _cell(column: str, stem: str) -> str:
    """An image of the gallery, URL-encoded (``#``, ``%``, spaces), linking to its full-size file."""
    url = html.escape(quote(f"{column}/{stem}.png"), quote=True)
    alt = html.escape(f"{column}/{stem}.png", quote=True)
    return f'<td><a href="{url}"><img src="{url}" alt="{alt}" loading="lazy"></a></td>'


def write_gallery(out_dir: str | Path, stems: list[str], about: dict,
                  columns: tuple[str, ...] = ("real_A", "fake_B")) -> Path:
    """Write ``<out_dir>/index.html``: per input, ``<out_dir>/<column>/<stem>.png`` side by side.

    Images keep their natural size up to :data:`GALLERY_MAX_WIDTH` px and link to the full-size files; the heading
    says which checkpoint (path, step, epoch) produced them (:func:`provenance`).

    Args:
        out_dir: the output folder.
        stems: image names without ``.png``.
        about: ``checkpoint``, ``source`` (``i2i`` | ``published``), ``step``, ``epoch``, ``input_dir``.
        columns: sub-folders shown, left to right.
    """
    out_dir = Path(out_dir)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = [f"<tr><td>{html.escape(stem)}</td>{''.join(_cell(c, stem) for c in columns)}</tr>" for stem in stems]
    style = (f"img{{max-width:{GALLERY_MAX_WIDTH}px;height:auto}}"
             "td,th{vertical-align:top;padding:4px;text-align:left}table{border-collapse:collapse}")
    title = f"i2i-test: {out_dir}"
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(provenance(about))}</p><p>{len(stems)} images (click one for the full-size file)</p>"
            f"<table border='1'><tr><th>name</th>{head}</tr>" + "".join(rows) + "</table></body></html>\n")
    path = out_dir / "index.html"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- stale outputs
def _contains(folder: Path, path: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (paths made absolute, not resolved)."""
    folder, path = Path(os.path.abspath(folder)), Path(os.path.abspath(path))
    return path == folder or folder in path.parents


def check_clearable(out_dir: str | Path, inputs: dict[str, Path | None], recursive: str = "images to translate"
                    ) -> None:
    """Refuse an ``out_dir`` whose outputs overlap an input (the images to translate, a reference, the checkpoint).

    Replacing ``<out_dir>/fake_B/`` would delete an input inside it; the folder of images to translate, searched
    recursively, must not hold it either (the outputs would be read back as inputs).

    Args:
        out_dir: the output folder.
        inputs: ``{what: path}`` of everything read, e.g. ``{"checkpoint": ...}`` (``None`` entries are skipped).
        recursive: the entry of ``inputs`` whose folder is searched recursively.

    Raises:
        ConfigError: one line naming ``out_dir``, the input and the fix.
    """
    out_dir = Path(out_dir)
    for what, path in inputs.items():
        if path is None:
            continue
        for name in OUTPUT_DIRS:
            if _contains(out_dir / name, Path(path)):
                raise ConfigError(f"out_dir={out_dir}: i2i-test replaces {out_dir / name}/, which holds the {what} "
                                  f"{path} — choose another out_dir (or move the input)")
            if what == recursive and _contains(Path(path), out_dir / name):
                raise ConfigError(f"out_dir={out_dir}: inside the {what} ({path}), so its images would be read back "
                                  f"as inputs — choose an out_dir outside {path}")


def clear_outputs(out_dir: str | Path) -> list[str]:
    """Remove what ``i2i-test`` wrote into ``out_dir`` before (:data:`OUTPUTS` and their temporary files).

    Nothing else in the folder is touched. Returns the names removed (with a trailing ``/`` for folders).
    """
    out_dir = Path(out_dir)
    removed = []
    for name in OUTPUT_DIRS:
        path = out_dir / name
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed.append(name)
        elif path.is_dir():
            shutil.rmtree(path)
            removed.append(f"{name}/")
    for name in OUTPUT_FILES:
        for path in (out_dir / name, *out_dir.glob(f".{name}.*tmp")):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path.name)
    if removed:
        note(f"removed the previous results in {out_dir} ({', '.join(removed)}); its other files are kept")
    return removed
