"""Inference: translate a folder of images and write ``fake_B/``, ``real_A/`` and an HTML gallery."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from i2i.data.folder import crop_to_size
from i2i.utils.images import save_image, write_gallery


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
def iter_translations(G: torch.nn.Module, dataset, device: torch.device, batch_size: int = 1, prepare=None):
    """Translate every dataset item; yield ``(path, real, fake)``, both [C, h, w] in [-1, 1] at the file's size.

    The output is cropped back to the input's size (undoing the dataset's padding) and resized back when the
    dataset resized the input. Images of any sizes mix with any ``batch_size`` (see :func:`size_batches`).
    """
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
            yield batch["A_path"][i], real_i, fake_i


def translate_dataset(G: torch.nn.Module, dataset, out_dir: str | Path, device: torch.device, batch_size: int = 1,
                      prepare=None) -> list[str]:
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

    Returns:
        The stems written, in order.
    """
    out_dir = Path(out_dir)
    stems: list[str] = []
    seen: dict[str, int] = {}
    for path, real_i, fake_i in iter_translations(G, dataset, device, batch_size, prepare):
        stem = Path(path).stem
        if stem in seen:  # two inputs with one name (recursive folders): keep both
            seen[stem] += 1
            stem = f"{stem}_{seen[stem]}"
        else:
            seen[stem] = 0
        save_image(fake_i, out_dir / "fake_B" / f"{stem}.png")
        save_image(real_i, out_dir / "real_A" / f"{stem}.png")
        stems.append(stem)
    write_gallery(out_dir, stems, ("real_A", "fake_B"), title=f"i2i: {out_dir}")
    return stems
