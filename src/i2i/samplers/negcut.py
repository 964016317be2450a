"""NEGCUT's instance-wise negative generator as a patch sampler (Wang et al., "Instance-wise Hard Negative Example
Generation for Contrastive Learning in Unpaired Image-to-Image Translation", ICCV 2021).

Per layer l, for each image: queries and keys are gathered at shared random locations (CUT's sampling); the
negatives are not the other keys but M vectors made by a generator N_l from the image's condition vector c and
Gaussian noise z_j:

    c   = mean over all H·W locations of the projected, L2-normalised source features      [B, C']
    n_j = normalise(N_l([c; z_j])),  z_j ~ N(0, I_{z_dim}),  j = 1..M                         [B, M, C']

N_l is ``Linear(C' + z_dim, C') - ReLU - Linear(C', C')``. N is trained in its own phase (D, N, G per step) to
*maximise* the contrastive loss computed with its negatives, on detached queries and keys, plus a diversity term
(``lambda_ms``; published sign: N minimises ``-lambda_ms·mean|n_{1..M/2} - n_{M/2+1..M}|``); the generator and the
projection heads minimise it in their step while N is frozen.

As in the published code (WeilunWang/NEGCUT: models/negative_generator.py ``Negative_Generator``,
models/negcut_model.py ``calculate_NCE_loss`` / ``compute_N_loss``): ``condition``

- ``ema`` (``--netN neg_gen_momentum``, the default): the source features are projected by a moving-average copy of
  the method's projection heads (updated as ``ema = decay·ema + (1-decay)·heads`` once per step, after the heads'
  step; never trained by an optimizer; held as buffers so that it is checkpointed but in no optimizer group);
- ``heads`` (``neg_gen_al``): projected by the method's heads themselves;
- ``features`` (``neg_gen``): the raw source features through N's own ``Conv1x1(C_l, C') - ReLU - Conv1x1(C', C')``.

The published moving-average copy starts from an initialisation of its own (``ema_init=random``), not from a copy of
the heads (``ema_init=copy``). The diversity term is published on the negatives of the last NCE call of the N step
only (the identity term's with ``nce_idt``: an attribute overwritten by the second call), ``diversity_rows=last``,
the default; ``all`` takes the negatives of every term. In the generator's step the published gradient reaches
the encoder through the negatives' condition vector (``condition_gradient=true``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from i2i.models.layers import init_weights
from i2i.models.projection import l2_normalize
from i2i.samplers.base import SampleContext, flatten_hw
from i2i.samplers.random import RandomSampler

CONDITIONS = ("ema", "heads", "features")
EMA_INITS = ("random", "copy")
DIVERSITY_ROWS = ("last", "all")


def as_buffers(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a buffer of the same name, in place (same state_dict keys)."""
    for sub in module.modules():
        for name, p in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, p.detach().clone())
    return module


def diversity(neg: torch.Tensor) -> torch.Tensor:
    """Published diversity of one layer's negatives: mean |n_{1..M/2} - n_{M/2+1..2·(M/2)}|, [B, M, C] -> [B]."""
    half = neg.shape[1] // 2
    return (neg[:, :half] - neg[:, half:2 * half]).abs().mean(dim=(1, 2))


class NegCutSampler(nn.Module):
    """Random shared locations for queries and keys, generated negatives in ``ctx.negatives`` (``method/sampler=negcut``).

    Args:
        condition: ``ema`` (published default), ``heads`` or ``features``: what the condition vector is the mean of.
        ema_decay: moving-average decay of the ``ema`` copy (published 0.9).
        ema_init: ``random`` (published: an initialisation of its own) or ``copy`` (starts as the heads).
        z_dim: noise dimension (published 64).
        num_negatives: negatives per image M; None = the method's ``num_patches`` (published).
        lambda_ms: weight of the diversity term in N's phase (published ``lambda_MS_neg`` 1.0); 0 = off.
        diversity_rows: ``last`` (the last term's negatives only, published) or ``all`` (every term's).
        condition_gradient: in the generator's step, let the gradient reach the source features through the
            condition vector (published); False: the negatives are constants for G and the heads.
        per_image: other random locations for every image (False: shared by the batch, as published).
        phase: the name of N's optimisation phase.
    """

    needs_score_map = False

    def __init__(self, condition: str = "ema", ema_decay: float = 0.9, ema_init: str = "random", z_dim: int = 64,
                 num_negatives: int | None = None, lambda_ms: float = 1.0, diversity_rows: str = "last",
                 condition_gradient: bool = True, per_image: bool = False, phase: str = "N") -> None:
        super().__init__()
        checks = (("condition", condition, CONDITIONS), ("ema_init", ema_init, EMA_INITS),
                  ("diversity_rows", diversity_rows, DIVERSITY_ROWS))
        for key, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"method.sampler.{key}={value!r}: use one of {', '.join(allowed)}")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"method.sampler.ema_decay={ema_decay}: the moving-average decay must lie in [0, 1] "
                             "(published 0.9)")
        if z_dim < 1:
            raise ValueError(f"method.sampler.z_dim={z_dim}: the noise needs at least one dimension (published 64)")
        if num_negatives is not None and num_negatives < 2:
            raise ValueError(f"method.sampler.num_negatives={num_negatives}: use null (= method.num_patches) or "
                             "at least 2")
        if lambda_ms < 0:
            raise ValueError(f"method.sampler.lambda_ms={lambda_ms}: the diversity weight must be >= 0 (published 1)")
        if not phase.isidentifier() or phase in ("D", "G", "F"):
            raise ValueError(f"method.sampler.phase={phase!r}: name the phase by an identifier other than D, G, F")
        self.condition, self.ema_decay, self.ema_init, self.z_dim = condition, ema_decay, ema_init, z_dim
        self.num_negatives, self.lambda_ms, self.diversity_rows = num_negatives, lambda_ms, diversity_rows
        self.condition_gradient, self.phase = condition_gradient, phase
        self.locations = RandomSampler(per_image=per_image)
        self._heads: tuple[nn.Module, ...] = ()  # the method's heads: a reference, not a submodule
        self.generators = nn.ModuleList()  # N_l per layer
        self.convs = nn.ModuleList()  # ``features`` only: N's own 1x1 convolutions per layer
        self.ema: nn.Module | None = None  # ``ema`` only: the moving-average copy of the heads (buffers)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # moving-average updates so far

    def extra_repr(self) -> str:
        return (f"condition={self.condition}, ema_decay={self.ema_decay}, ema_init={self.ema_init}, "
                f"z_dim={self.z_dim}, num_negatives={self.num_negatives}, lambda_ms={self.lambda_ms}, "
                f"diversity_rows={self.diversity_rows}, condition_gradient={self.condition_gradient}, "
                f"phase={self.phase}")

    # ------------------------------------------------------------------------------------------ the contract
    def bind(self, heads: nn.Module, init_type: str = "xavier", init_gain: float = 0.02) -> None:
        """Size N from the method's heads (``in_channels`` C_l, width ``nc``; C' = nc, or C_l without MLP)."""
        if self._heads:
            raise ValueError("this negcut sampler is already bound to a method: build one sampler per method")
        self._heads = (heads,)
        dims = [heads.nc or c for c in heads.in_channels]
        for c, d in zip(heads.in_channels, dims):
            self.generators.append(nn.Sequential(nn.Linear(d + self.z_dim, d), nn.ReLU(), nn.Linear(d, d)))
            if self.condition == "features":
                self.convs.append(nn.Sequential(nn.Conv2d(c, d, 1), nn.ReLU(), nn.Conv2d(d, d, 1)))
        init_weights(self, init_type, init_gain)
        if self.condition == "ema":
            ema = copy.deepcopy(heads)
            if self.ema_init == "random":  # published: a second head network with an initialisation of its own
                init_weights(ema, init_type, init_gain)
            self.ema = as_buffers(ema)

    @torch.no_grad()
    def begin_phase(self) -> None:
        """The moving-average update ``ema = d·ema + (1-d)·heads``, skipped (d = 1) before the first step.

        Published: after every generator/heads step; here at the start of the next step's N phase, which sees the
        same heads (no host-device synchronisation: the skip is a tensor ``where``).
        """
        if self.ema is not None:
            decay = torch.where(self.updates > 0, self.ema_decay, 1.0)
            params = dict(self._heads[0].named_parameters())
            for name, buf in self.ema.named_buffers():
                buf.mul_(decay.to(buf.dtype)).add_((1 - decay.to(buf.dtype)) * params[name].detach())
        self.updates += 1

    # ------------------------------------------------------------------------------------------ sampling
    def forward(self, feat_k: torch.Tensor, feat_q: torch.Tensor, num_patches: int,
                ctx: SampleContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] x 2 -> ([B, N, C], [B, N, C]) at shared random locations; negatives [B, M, C'] into ctx."""
        k, q = self.locations(feat_k, feat_q, num_patches, ctx)
        if ctx is None:  # nowhere to put negatives: plain random sampling
            return k, q
        own_phase = ctx.phase == self.phase
        source = feat_k if (own_phase or self.condition_gradient) else feat_k.detach()
        cond = self.condition_vector(source, ctx.layer_pos)  # [B, C']
        neg = self.generate(cond, ctx.layer_pos, self.num_negatives or num_patches)  # [B, M, C']
        ctx.negatives = neg
        if own_phase and self.lambda_ms > 0:
            ctx.terms[f"{self.phase}_MS"] = -self.lambda_ms * self.row_weights(neg.shape[0], ctx.groups, neg) \
                * diversity(neg)  # [B]
        return k, q

    def condition_vector(self, feat: torch.Tensor, pos: int) -> torch.Tensor:
        """The image's condition: mean over all locations of its projected features, [B, C, H, W] -> [B, C']."""
        if self.condition == "features":
            return self.convs[pos](feat).mean(dim=(2, 3))
        heads = self.ema if self.condition == "ema" else self._heads[0]
        return heads(flatten_hw(feat), pos).mean(dim=1)  # [B, HW, C'] -> [B, C']

    def generate(self, cond: torch.Tensor, pos: int, m: int) -> torch.Tensor:
        """M negatives per image from its condition and fresh noise: [B, C'] -> [B, M, C'] (L2-normalised)."""
        z = torch.randn(cond.shape[0], m, self.z_dim, device=cond.device, dtype=cond.dtype)  # [B, M, z_dim]
        inp = torch.cat([cond.unsqueeze(1).expand(-1, m, -1), z], dim=2)  # [B, M, C' + z_dim]
        return l2_normalize(self.generators[pos](inp))

    def row_weights(self, rows: int, groups: int, like: torch.Tensor) -> torch.Tensor | float:
        """1 per row (``all``); ``last``: ``groups`` on the last term's rows and 0 elsewhere, so that the mean over
        all rows is the mean over the last term's rows."""
        if self.diversity_rows == "all" or groups == 1:
            return 1.0
        w = torch.zeros(rows, device=like.device, dtype=like.dtype)
        w[rows - rows // groups:] = groups
        return w

