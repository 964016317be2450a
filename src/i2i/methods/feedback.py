"""Discriminator attention fed back to the generator (ASGIT, Lin et al., WACV 2021, Eq. 1, 4 and 5).

    ŷ^(k+1) = G(x ⊕ T(M^(k)))          ⊕ = rhp:   x · (1 + T(M))      (Eq. 4, residual Hadamard product)
                                              alpha: [x, T(M)]          (Eq. 5, a 4th input channel)

* :class:`TransferBlock` — the trainable attention transfer block T (three transposed convs, x8, trained with G).
* :class:`AttentionCache` — ``timing="previous"``: M for an image is D's map of that image's translation at its
  previous visit, stored per image path in the image's full (resized, pre-crop) frame, so a visit with another
  crop/flip reads and writes exactly the region it covers (docs/feedback.md).
* :class:`Feedback` — the module a :class:`~i2i.methods.base.Method` calls through ``translate``: it builds M for
  the rows of G's input (``previous``: the cache; ``same_step``: D's map of the real input now, detached), applies
  T and the injection, and receives D's maps through :meth:`Feedback.observe`. At test time the placeholder is
  all-ones (the paper) or D's map of the input (:meth:`Feedback.test_input`).

Everything stays on the device; row keys are looked up in a Python dict and the slot indices reach the device
through pinned memory (no host-device synchronisation in a training step).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from i2i.models.layers import get_norm_layer

INJECTIONS, TIMINGS, PLACEHOLDERS, TRANSFERS = ("rhp", "alpha"), ("previous", "same_step"), \
    ("ones", "discriminator"), ("block", "upsample")


class TransferBlock(nn.Module):
    """T: attention map -> pixel weight map (published ``SComponent`` mode 0).

    Three ``ConvTranspose2d(k3, s2, p1, op1)`` layers (1 -> widths[0] -> widths[1] -> 1), norm + ReLU between them,
    norm + sigmoid at the end; x8 upsampling, then a bilinear resize to the exact image size when needed.
    ``mode="upsample"`` is the published CycleGAN-attention path (no T: the map is only resized).

    Shape:
        [B, 1, h, w] -> [B, 1, H, W] in (0, 1).
    """

    def __init__(self, widths: Sequence[int] = (64, 128), norm: str = "instance", mode: str = "block") -> None:
        super().__init__()
        if mode not in TRANSFERS:
            raise ValueError(f"feedback.transfer={mode!r}: use one of {', '.join(TRANSFERS)}")
        self.mode, self.scale = mode, 2 ** (len(widths) + 1) if mode == "block" else 8
        layers: list[nn.Module] = []
        if mode == "block":
            nl, chans = get_norm_layer(norm), [1, *widths, 1]
            for i, (c_in, c_out) in enumerate(itertools.pairwise(chans)):
                last = i == len(chans) - 2
                layers += [nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, output_padding=1), nl(c_out),
                           nn.Sigmoid() if last else nn.ReLU(True)]
        self.model = nn.Sequential(*layers)

    def forward(self, m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.model(m) if self.mode == "block" else m
        if out.shape[-2:] != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


def _axis(n: int, start: torch.Tensor, length: torch.Tensor, extent: int | torch.Tensor) -> torch.Tensor:
    """Normalised [0, 1] full-frame coordinates of ``n`` pixel centres spanning ``[start, start + length)``.

    Args:
        n: samples along the axis; start, length: [B] in load-frame pixels; extent: load size [B].

    Returns:
        [B, n].
    """
    t = (torch.arange(n, device=start.device, dtype=torch.float32) + 0.5) / n  # [n]
    return (start[:, None].float() + t[None] * length[:, None].float()) / extent[:, None].float()


class AttentionCache(nn.Module):
    """Per-image attention maps in the full (resized, pre-crop) frame, keyed by image path, initialised to ones.

    A map ``R x R`` covers the whole resized image (normalised coordinates, any aspect ratio). ``params`` rows are
    the dataset's ``(top, left, load_h, load_w, flipped)``; the crop size is the image size of the batch.

    Args:
        resolution: R, side of a stored map (memory: 4·R² bytes per image).
        device: ``auto`` (the device of the first maps seen: no transfers) or ``cpu`` (saves GPU memory, but each
            write then synchronises).
    """

    def __init__(self, resolution: int = 64, device: str = "auto") -> None:
        super().__init__()
        self.resolution, self.device_name = resolution, device
        self.slots: dict[str, int] = {}
        self.store: torch.Tensor | None = None  # [capacity, 1, R, R]

    def __len__(self) -> int:
        return len(self.slots)

    def _index(self, keys: Sequence[str], device: torch.device) -> torch.Tensor:
        """Slot of each key (new keys get fresh all-ones slots); [B] long on ``device``."""
        for k in keys:
            if k not in self.slots:
                self.slots[k] = len(self.slots)
        need = len(self.slots)
        if self.store is None or self.store.shape[0] < need:
            dev = torch.device("cpu") if self.device_name == "cpu" else device
            grown = torch.ones(max(need, 2 * (0 if self.store is None else self.store.shape[0]), 16), 1,
                               self.resolution, self.resolution, device=dev)
            if self.store is not None:
                grown[: self.store.shape[0]] = self.store
            self.store = grown
        idx = torch.tensor([self.slots[k] for k in keys], dtype=torch.long)
        if self.store.device.type == "cuda":
            return idx.pin_memory().to(self.store.device, non_blocking=True)
        return idx.to(self.store.device)

    def read(self, keys: Sequence[str], params: torch.Tensor, size: tuple[int, int],
             crop: tuple[int, int]) -> torch.Tensor:
        """Maps of the crop/flip region of each image, sampled on a ``size`` grid.

        Args:
            keys: image paths, B of them.
            params: [B, 5] (top, left, load_h, load_w, flipped).
            size: (h, w) of the returned maps.
            crop: (H, W) of the crop in load-frame pixels (the batch's image size).

        Returns:
            [B, 1, h, w] in the frame the images were delivered in (flipped when they were).
        """
        dev = params.device
        idx = self._index(keys, dev)
        p = params.to(self.store.device)
        ys = _axis(size[0], p[:, 0], torch.full_like(p[:, 0], crop[0]), p[:, 2])         # [B, h]
        xs = _axis(size[1], p[:, 1], torch.full_like(p[:, 1], crop[1]), p[:, 3])         # [B, w]
        xs = torch.where(p[:, 4:5].bool(), xs.flip(1), xs)                               # delivered column order
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), -1)  # [B, h, w, 2] (x, y)
        out = F.grid_sample(self.store[idx], grid * 2 - 1, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out.to(dev)

    def write(self, keys: Sequence[str], params: torch.Tensor, maps: torch.Tensor, crop: tuple[int, int]) -> None:
        """Paste each map (in the delivered frame) into its image's crop region; the rest of the frame is kept.

        Args:
            keys: image paths, B of them.
            params: [B, 5].
            maps: [B, 1, h, w], the maps of the delivered crops (any resolution).
            crop: (H, W) of the crop in load-frame pixels.
        """
        idx = self._index(keys, maps.device)
        p = params.to(self.store.device).float()
        maps = maps.detach().float().to(self.store.device)
        centre = (torch.arange(self.resolution, device=p.device, dtype=torch.float32) + 0.5) / self.resolution
        # full-frame pixel centres (load-frame pixels) -> normalised coordinates inside the crop
        ys = (centre[None] * p[:, 2:3] - p[:, 0:1]) / crop[0]                           # [B, R]
        xs = (centre[None] * p[:, 3:4] - p[:, 1:2]) / crop[1]                           # [B, R]
        xs = torch.where(p[:, 4:5] > 0, 1 - xs, xs)                                     # delivered frame
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), -1)  # [B, R, R, 2]
        pasted = F.grid_sample(maps, grid * 2 - 1, mode="bilinear", padding_mode="border", align_corners=False)
        inside = ((grid >= 0) & (grid <= 1)).all(-1)[:, None]                            # [B, 1, R, R]
        self.store.index_copy_(0, idx, torch.where(inside, pasted, self.store[idx]))

    # exact resume: the cache is part of the method state
    def get_extra_state(self) -> dict:
        n = len(self.slots)
        keys = sorted(self.slots, key=self.slots.get)
        maps = self.store[:n].clone() if self.store is not None else torch.ones(0, 1, self.resolution, self.resolution)
        return {"keys": keys, "maps": maps, "resolution": self.resolution}

    def set_extra_state(self, state: dict) -> None:
        self.slots = {k: i for i, k in enumerate(state["keys"])}
        maps = state["maps"]
        self.store = maps.clone() if len(self.slots) else None


def heatmap(m: torch.Tensor) -> torch.Tensor:
    """[B, 1, h, w] -> coloured (blue-green-red) [B, 3, h, w] in [-1, 1], each map stretched to its own range."""
    flat = m.detach().float().flatten(1)
    lo, hi = flat.min(1).values[:, None, None, None], flat.max(1).values[:, None, None, None]
    t = ((m.detach().float() - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    rgb = torch.cat([(2 * t - 1).clamp(0, 1), 1 - (2 * t - 1).abs(), (1 - 2 * t).clamp(0, 1)], 1)
    return rgb * 2 - 1


class Side(str, Enum):
    """Which images the rows of a generator input are, so :class:`Feedback` can find their maps.

    A ``str`` enum (equal to, and formatted as, its value) that also works on Python 3.10, which has no ``StrEnum``.
    """

    A = "A"  #: the batch's A images, followed by its B images when a method stacks [real_A; real_B] (identity)
    B = "B"  #: the batch's B images
    ENCODE = "encode"  #: a re-encoding of images pixel-aligned with the last ``A`` input (PatchNCE keys/queries)
    REC = "rec"  #: cycle reconstructions: they get the placeholder map

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Feedback(nn.Module):
    """Attention feedback into G's input, called by :meth:`Method.translate` / ``encode``.

    Rows of G's input are matched to images by the batch and the :class:`Side`: ``Side.A`` rows are the batch's A
    images, followed by its B images when the method stacked ``[real_A; real_B]`` (identity); ``Side.B`` rows are B
    images; ``Side.ENCODE`` reuses the maps of the last ``A`` call (PatchNCE encodes images pixel-aligned with it);
    ``Side.REC`` (cycle reconstruction) and batches without crop parameters get the placeholder.

    Args:
        injection: ``rhp`` (x·(1 + T(M))) or ``alpha`` ([x, T(M)], G built with one more input channel).
        timing: ``previous`` (cache, Eq. 1) or ``same_step`` (D's map of the real input now, detached).
        transfer: ``block`` (T, the paper) or ``upsample`` (published CycleGAN-attention: no T).
        transfer_widths: hidden widths of T (published 64, 128).
        transfer_norm: norm inside T.
        cache_resolution: side of the stored full-frame maps.
        cache_device: ``auto`` | ``cpu``.
        test_placeholder: ``ones`` (the paper) or ``discriminator`` (D's map of the test input).
        name: the preset's name (``pha_rhp``, ...).
    """

    def __init__(self, injection: str = "rhp", timing: str = "previous", transfer: str = "block",
                 transfer_widths: Sequence[int] = (64, 128), transfer_norm: str = "instance",
                 cache_resolution: int = 64, cache_device: str = "auto", test_placeholder: str = "ones",
                 name: str = "feedback") -> None:
        super().__init__()
        for key, value, allowed in (("injection", injection, INJECTIONS), ("timing", timing, TIMINGS),
                                    ("test_placeholder", test_placeholder, PLACEHOLDERS)):
            if value not in allowed:
                raise ValueError(f"feedback.{key}={value!r}: use one of {', '.join(allowed)}")
        self.injection, self.timing, self.test_placeholder = injection, timing, test_placeholder
        self.name = name
        self.transfer = TransferBlock(transfer_widths, transfer_norm, transfer)
        self.cache = AttentionCache(cache_resolution, cache_device) if timing == "previous" else None
        self.__dict__["_sources"] = {}  # side -> D (not registered: D belongs to the loop / the method)
        self._last: dict[str, torch.Tensor] = {}  # side -> M of the last call, delivered frame [rows, 1, h, w]
        self._vis: dict[str, torch.Tensor] = {}

    @property
    def extra_channels(self) -> int:
        """Input channels the injection adds to G."""
        return 1 if self.injection == "alpha" else 0

    def attach(self, sources: dict[str, nn.Module]) -> None:
        """Discriminators whose maps of real inputs are used (``same_step``, test placeholder), by side A/B."""
        self.__dict__["_sources"] = dict(sources)

    # ------------------------------------------------------------------ rows
    @staticmethod
    def _rows(batch: dict, side: Side, n_rows: int) -> tuple[list[str], torch.Tensor, list[str]] | None:
        """(keys, params [rows, 5], domain per row) of G's input rows, or None when they cannot be matched."""
        other = {"A": "B", "B": "A"}[side]
        if f"{side}_params" not in batch or f"{side}_path" not in batch:
            return None
        n = len(batch[f"{side}_path"])
        if n_rows == n:
            return list(batch[f"{side}_path"]), batch[f"{side}_params"], [side] * n
        if n_rows == 2 * n and f"{other}_params" in batch:
            keys = list(batch[f"{side}_path"]) + list(batch[f"{other}_path"])
            return keys, torch.cat([batch[f"{side}_params"], batch[f"{other}_params"]]), [side] * n + [other] * n
        return None

    def _map_size(self, x: torch.Tensor) -> tuple[int, int]:
        s = self.transfer.scale
        return max(1, round(x.shape[-2] / s)), max(1, round(x.shape[-1] / s))

    def _discriminator_map(self, x: torch.Tensor, domains: list[str], size: tuple[int, int]) -> torch.Tensor:
        """D's map of real inputs (detached), one D call per distinct discriminator; [rows, 1, h, w]."""
        if not self._sources:
            raise RuntimeError("feedback: no discriminator attached (build.py calls feedback.attach)")
        out = torch.empty(x.shape[0], 1, *size, device=x.device)
        groups: dict[int, tuple[nn.Module, list[int]]] = {}
        for i, d in enumerate(domains):
            D = self._sources[d]
            groups.setdefault(id(D), (D, []))[1].append(i)
        with torch.no_grad():
            for D, rows in groups.values():
                sel = slice(rows[0], rows[-1] + 1) if rows == list(range(rows[0], rows[-1] + 1)) else rows
                attn = D(x[sel]).attention.float()
                out[sel] = F.interpolate(attn, size=size, mode="bilinear", align_corners=False) \
                    if attn.shape[-2:] != size else attn
        return out

    # ------------------------------------------------------------------ G input
    def combine(self, x: torch.Tensor, M: torch.Tensor, record: bool = True) -> torch.Tensor:
        """Apply T to M [B, 1, h, w] and inject into x [B, C, H, W] -> [B, C (+1), H, W]."""
        w = self.transfer(M, x.shape[-2:]).to(x.dtype)  # [B, 1, H, W] in (0, 1)
        if record:  # kept for the sample grid (references only, no copy)
            self._vis.update(attn_M=M.detach(), attn_TM=w.detach())
        return x * (1 + w) if self.injection == "rhp" else torch.cat([x, w], 1)

    def inject(self, x: torch.Tensor, batch: dict | None = None, side: Side = Side.A,
               hflip: bool = False) -> torch.Tensor:
        """G's input for ``x`` [rows, C, H, W]; ``hflip``: x is horizontally flipped w.r.t. the batch images."""
        side = Side(side)  # a misspelt side fails here instead of silently getting the placeholder
        size = self._map_size(x)
        if side == Side.ENCODE and "A" in self._last and self._last["A"].shape[0] >= x.shape[0]:
            M = self._last["A"][: x.shape[0]]
        else:
            rows = self._rows(batch, side, x.shape[0]) if batch is not None and side in (Side.A, Side.B) else None
            if rows is None:
                return self.combine(x, torch.ones(x.shape[0], 1, *size, device=x.device), record=side == Side.A)
            keys, params, domains = rows
            if self.timing == "previous":
                M = self.cache.read(keys, params, size, tuple(x.shape[-2:]))
            else:
                M = self._discriminator_map(x, domains, size)
                M = M.flip(3) if hflip else M  # stored in the delivered frame
            self._last[side] = M
        return self.combine(x, M.flip(3) if hflip else M, record=side == Side.A)

    def observe(self, attn: torch.Tensor, batch: dict, side: Side = Side.A, hflip: bool = False,
                crop: tuple[int, int] | None = None) -> None:
        """D's map of the translation of the ``side`` images (``previous``: written to the cache after detaching).

        Args:
            attn: [rows, 1, h, w] from D(G(x)) for the first ``rows`` images of ``side``.
            batch: the training batch (paths and crop parameters).
            side: which images were translated.
            hflip: the translation is flipped w.r.t. the batch images.
            crop: (H, W) of the images (default: the batch's ``side`` images).
        """
        side = Side(side)
        attn = attn.detach().float()
        if side == Side.A:
            self._vis["attn_D"] = attn
        rows = self._rows(batch, side, attn.shape[0]) if self.cache is not None else None
        if rows is None:
            return
        crop = crop or tuple(batch[side].shape[-2:])
        self.cache.write(rows[0], rows[1], attn.flip(3) if hflip else attn, crop)

    # ------------------------------------------------------------------ test time, visuals
    @torch.no_grad()
    def test_input(self, x: torch.Tensor, D: nn.Module | None = None) -> torch.Tensor:
        """G's test input: the ``test_placeholder`` map (all ones, or ``D``'s map of ``x``) through T."""
        size = self._map_size(x)
        if self.test_placeholder == "discriminator":
            D = D if D is not None else self._sources.get("A")
            if D is None:
                raise RuntimeError("feedback.test_placeholder=discriminator needs the checkpoint's discriminator")
            attn = D(x).attention.float()
            M = F.interpolate(attn, size=size, mode="bilinear", align_corners=False)
        else:
            M = torch.ones(x.shape[0], 1, *size, device=x.device)
        return self.combine(x, M)

    def visuals(self, n: int) -> dict[str, torch.Tensor]:
        """Heatmap columns of the last step: M fed to T, T(M) injected, D's map of the translation."""
        return {k: heatmap(v[:n]) for k, v in self._vis.items()}
