"""Hneg-SRC (Jung, Kwon, Ye, "Exploring Patch-wise Semantic Relation for Contrastive Learning in Image-to-Image
Translation Tasks", CVPR 2022): CUT whose PatchNCE is replaced by a hard-negative decoupled contrastive loss
(hDCE) and which adds a semantic relation consistency loss (SRC) between the patches of the source and of the
translation.

For the N sampled, projected, L2-normalised patches of one image, z (source) and w (translation)::

    P_k = softmax_i(z_k·z_i),  Q_k = softmax_i(w_k·w_i)          SRC = Σ_k JSD(P_k ‖ Q_k)     (z detached)
    ω_kj = exp((s_kj − max_j s_kj) / γ),  s = z zᵀ with −10 on the diagonal                       (detached)
    hDCE_k = log Σ_{j≠k} exp((ω_kj · w_k·z_j − w_k·z_k) / τ)   (decoupled: no positive in the denominator)

and the generator objective, as in the published code (jcy132/Hneg_SRC, Single-modal/models/cut_model.py
``compute_G_loss``)::

    L_G = L_GAN + λ_hDCE · 0.5 · (hDCE(X) + hDCE(Y)) + λ_SRC · SRC(X)

every term averaged over the NCE layers. The identity term hDCE(Y) takes its weights from the relations of
real_B's patches; SRC is evaluated on X only. γ follows a linear curriculum over the epochs (optionally stepped to
1). This module implements the terms through CUT's per-layer seam (:meth:`HnegSRC.layer_terms`): hDCE under
``"NCE"`` (CUT weights it by ``lambda_nce`` = λ_hDCE and halves it with the identity rows), SRC under ``"SRC"``
(already weighted; CUT keeps the mean over the X rows). See docs/hneg_src.md for the paper-vs-code differences
and the keys that reach each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from i2i.methods.cut import CUT, DEFAULT_NCE_LAYERS
from i2i.methods.enco import decoupled_nce_loss
from i2i.samplers.base import SampleContext

#: ways the relation weights enter hDCE: scale the negatives' cosines (published) or weight their exp-terms
WEIGHTINGS = ("cosine", "importance")
#: γ once the published ``--step_gamma`` switch fires (a constant in the published SRC_Loss)
STEPPED_GAMMA = 1.0


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 at least (half-precision similarities widened; float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def relation_log_weights(k: torch.Tensor, gamma: float | torch.Tensor, diagonal: float = -10.0) -> torch.Tensor:
    """Log of the hard-negative weights from the source patches' semantic relation.

    Published ``SRC_Loss`` (``only_weight`` path): softmax over j of s_kj / γ (s = z zᵀ with ``diagonal`` written on
    its diagonal), divided by its row maximum, i.e. ω_kj = exp((s_kj − max_j s_kj) / γ) ∈ (0, 1]; computed here in
    log space, so a small γ underflows to weights of 0 rather than to 0/0.

    Args:
        k: source patches [B, N, C], L2-normalised (detached here).
        gamma: the weights' temperature γ (> 0), a float or a 0-d tensor.
        diagonal: cosine written for a patch's relation to itself.

    Returns:
        log ω [B, N, N] (≤ 0, float32 at least), no gradient.
    """
    k = k.detach()
    sim = _wide(torch.bmm(k, k.transpose(1, 2)))  # [B, N, N]
    eye = torch.eye(sim.shape[-1], device=sim.device, dtype=torch.bool)
    sim = sim.masked_fill(eye, diagonal)
    return (sim - sim.amax(-1, keepdim=True)) / gamma


def semantic_relation_jsd(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """SRC per image: Σ_k JSD(P_k ‖ Q_k) over its N patches (Jensen–Shannon divergence, natural log).

    P_k = softmax_i(z_k·z_i) of the source patches (detached), Q_k = softmax_i(w_k·w_i) of the translation's
    (softmax temperature 1, a patch's relation to itself included, as published). Log-space throughout:
    log M = logaddexp(log P, log Q) − log 2. The similarities come from the features' precision; the divergence
    is taken in float64 (N² elementwise terms: cheap), since for nearly equal relations the float32 terms
    P·(log P − log M) cancel to a sum off by ~10%.

    Args:
        q: translation patches w [B, N, C], L2-normalised.
        k: source patches z [B, N, C], L2-normalised (detached here).

    Returns:
        [B] (sum over the N rows of the per-row JSD), float32 at least.
    """
    k = k.detach()
    log_p = torch.log_softmax(torch.bmm(k, k.transpose(1, 2)).double(), dim=-1)  # [B, N, N]
    log_q = torch.log_softmax(torch.bmm(q, q.transpose(1, 2)).double(), dim=-1)  # [B, N, N]
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    jsd = 0.5 * (log_p.exp() * (log_p - log_m) + log_q.exp() * (log_q - log_m)).sum(-1)  # [B, N]
    return jsd.sum(-1).to(_wide(q).dtype)


def hard_decoupled_nce_loss(q: torch.Tensor, k: torch.Tensor, log_weights: torch.Tensor | None, tau: float = 0.07,
                            diagonal: float = -10.0, weighting: str = "cosine") -> torch.Tensor:
    """hDCE per patch: the value of InfoNCE (weighted negatives), the gradient of the decoupled loss.

    With l⁺ = w_k·z_k, l_kj = w_k·z_j (j ≠ k; ``diagonal`` on j = k) and the negatives' logits
    ``cosine`` (published PatchHDCELoss): n_kj = ω_kj · l_kj / τ;
    ``importance``: n_kj = l_kj / τ + log(ω_kj / mean_{j'≠k} ω_kj') (importance weights of negatives drawn in
    proportion to ω, mean 1), the decoupled loss is v = logsumexp_j(n_kj) − l⁺/τ and the returned value is
    CE.detach() + e^(v − v.detach()) − 1, CE = logsumexp(l⁺/τ, n_k·) − l⁺/τ. Without weights it is
    :func:`~i2i.methods.enco.decoupled_nce_loss` (image negatives).

    Args:
        q: translation patches [B, N, C], L2-normalised (the anchors).
        k: source patches [B, N, C], L2-normalised (positive and negatives; detached here).
        log_weights: log ω [B, N, N] from :func:`relation_log_weights`, or None (plain decoupled loss).
        tau: temperature.
        diagonal: cosine written for an anchor's own key among the negatives.
        weighting: ``cosine`` or ``importance``.

    Returns:
        Loss per patch [B, N].
    """
    if log_weights is None:
        return decoupled_nce_loss(q, k, tau, "image", diagonal)
    k = k.detach()
    l_pos = _wide((q * k).sum(-1)) / tau  # [B, N]
    l_neg = _wide(torch.bmm(q, k.transpose(1, 2)))  # [B, N, N]
    eye = torch.eye(l_neg.shape[-1], device=l_neg.device, dtype=torch.bool)
    if weighting == "cosine":
        neg = (l_neg * log_weights.exp()).masked_fill(eye, diagonal) / tau
    else:
        off = log_weights.masked_fill(eye, -math.inf)  # the anchor's own key is no negative to draw
        log_mean = torch.logsumexp(off, -1, keepdim=True) - math.log(l_neg.shape[-1] - 1)  # [B, N, 1]
        neg = l_neg.masked_fill(eye, diagonal) / tau + (log_weights - log_mean).masked_fill(eye, 0.0)
    v = torch.logsumexp(neg, -1) - l_pos  # [B, N]
    ce = torch.logsumexp(torch.cat([l_pos.unsqueeze(-1), neg], -1), -1) - l_pos  # [B, N]
    return ce.detach() + torch.exp(v - v.detach()) - 1.0


class HnegSRC(CUT):
    """CUT with hDCE instead of PatchNCE and the SRC term.

    Args:
        feature_channels: channels of the generator at ``nce_layers`` (from ``G.feature_channels``).
        nce_layers: generator module indices whose outputs are contrasted.
        lambda_src: λ_SRC (published horse2zebra 0.05, cityscapes 0.1); 0 disables SRC.
        gamma: γ of the hard-negative weights (published ``--HDCE_gamma``, a temperature).
        gamma_min: γ reached at the last epoch by the curriculum (``--HDCE_gamma_min``).
        curriculum: γ moves linearly from ``gamma`` to ``gamma_min`` (``--use_curriculum``).
        n_epochs: epochs at the initial learning rate (the curriculum spans n_epochs + n_epochs_decay).
        n_epochs_decay: epochs of learning-rate decay.
        step_gamma_epoch: with the curriculum, γ = 1 after this epoch (``--step_gamma --step_gamma_epoch``);
            None = never.
        hard_negatives: weight the negatives by the source relation; False = plain decoupled loss (``--no_Hneg``).
        hneg_weighting: ``cosine`` (published: the weights scale the negatives' cosines) or ``importance``
            (the weights are importance weights of the negatives' exp-terms).
        **kwargs: the :class:`~i2i.methods.cut.CUT` arguments (num_patches, nc, tau, lambda_nce = λ_hDCE, nce_idt,
            sampler, ...).
    """

    phase_samplers = False  # its contrastive loss does not use generated negatives (method/sampler=negcut)

    def __init__(self, feature_channels: Sequence[int], nce_layers: Sequence[int] = DEFAULT_NCE_LAYERS,
                 lambda_src: float = 0.05, gamma: float = 50.0, gamma_min: float = 10.0, curriculum: bool = True,
                 n_epochs: int = 200, n_epochs_decay: int = 200, step_gamma_epoch: int | None = None,
                 hard_negatives: bool = True, hneg_weighting: str = "cosine", **kwargs) -> None:
        kwargs.setdefault("name", "hneg_src")
        super().__init__(feature_channels, nce_layers, **kwargs)
        if self.negatives != "image":
            raise ValueError(f"method.negatives={self.negatives!r}: Hneg-SRC's relations and hard-negative weights "
                             "are among the patches of one image — use method.negatives=image")
        if hneg_weighting not in WEIGHTINGS:
            raise ValueError(f"method.hneg_weighting={hneg_weighting!r}: use 'cosine' (published) or 'importance'")
        for key, value in (("gamma", gamma), ("gamma_min", gamma_min)):
            if not value > 0:
                raise ValueError(f"method.{key}={value}: the weights' temperature must be > 0 — e.g. "
                                 f"method.{key}={50 if key == 'gamma' else 10}")
        if curriculum and n_epochs + n_epochs_decay <= 0:
            raise ValueError(f"method.n_epochs + method.n_epochs_decay = {n_epochs + n_epochs_decay}: the "
                             "curriculum needs at least one epoch — set them to train.n_epochs and "
                             "train.n_epochs_decay, or method.curriculum=false")
        self.lambda_src, self.gamma, self.gamma_min, self.curriculum = lambda_src, gamma, gamma_min, curriculum
        self.n_epochs, self.n_epochs_decay, self.step_gamma_epoch = n_epochs, n_epochs_decay, step_gamma_epoch
        self.hard_negatives, self.hneg_weighting = hard_negatives, hneg_weighting
        # γ of the current epoch on the module's device: set outside the step, read without a host sync or a
        # recompilation of the compiled loss (not checkpointed: set_epoch recomputes it)
        self.register_buffer("current_gamma", torch.tensor(self.gamma_at(self.epoch)), persistent=False)

    def gamma_at(self, epoch: int) -> float:
        """γ in a (1-based) epoch: published SRC_Loss, γ + (γ_min − γ) · epoch / (n_epochs + n_epochs_decay),
        then 1 after ``step_gamma_epoch``."""
        if not self.curriculum:
            return float(self.gamma)
        gamma = self.gamma + (self.gamma_min - self.gamma) * epoch / (self.n_epochs + self.n_epochs_decay)
        if self.step_gamma_epoch is not None and epoch > self.step_gamma_epoch:
            gamma = STEPPED_GAMMA
        return float(gamma)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.current_gamma.fill_(self.gamma_at(epoch))

    def layer_terms(self, q: torch.Tensor, k: torch.Tensor, ctx: SampleContext,
                    groups: int = 1) -> dict[str, torch.Tensor]:
        """hDCE under ``"NCE"`` and λ_SRC · SRC under ``"SRC"``, per row [B] (rows: X, then identity Y).

        Every row's hDCE weights come from its own source patches (real_A for X, real_B for Y). SRC is returned
        for every row; CUT keeps the X rows' mean, so the identity rows carry no SRC (as published).

        Args:
            q: projected, L2-normalised translation patches [B, N, C].
            k: projected, L2-normalised source patches [B, N, C] (detached by both losses).
            ctx: the layer's position and D's score map (unused).
            groups: stacked terms in the rows (negatives are per image, so it does not matter here).
        """
        # similarities in float32 at least, autocast off: under bf16 a cosine carries ~3 digits, coarser than the
        # relation differences SRC measures (the heads themselves run under autocast as in CUT)
        with torch.autocast(q.device.type, enabled=False):
            q, k = _wide(q), _wide(k)
            log_w = relation_log_weights(k, self.current_gamma, self.diagonal) if self.hard_negatives else None
            nce = hard_decoupled_nce_loss(q, k, log_w, self.tau, self.diagonal, self.hneg_weighting)  # [B, N]
            terms = {"NCE": nce.mean(1)}
            if self.lambda_src > 0:
                terms["SRC"] = self.lambda_src * semantic_relation_jsd(q, k)
        return terms
