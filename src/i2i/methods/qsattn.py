"""QS-Attn (Hu et al., "QS-Attn: Query-Selected Attention for Contrastive Learning in I2I Translation", CVPR 2022).

CUT (adversarial loss + multilayer PatchNCE with identity term, Eq. 3) where the last two NCE layers contrast
attention-selected, attention-routed features instead of random patches (Sec. 3.2, samplers/qsattn.py); the
first layers keep ``self.sampler`` (CUT's random sampling, or any sampler given by ``method.sampler``).

Modes (Hu et al., CVPR 2022, Sec. 3.2 and Table 1; sapphire497/query-selected-attention,
models/networks_{global,local,local_global}.py):

- ``global``:       select by the entropy of the global attention A_g, route with the selected rows of A_g.
- ``local``:        select by the entropy of the w×w local attention A_l, route with the selected rows of A_l.
- ``local_global``: select by the local entropy, route with the selected rows of the global A_g.

``selection``, ``selection_attention``, ``routing``, ``routing_attention`` and ``routing_domain`` reach every
ablation of Table 3 (docs/qsattn.md maps rows A-H to overrides).
"""

from __future__ import annotations

from collections.abc import Sequence

from i2i.methods.cut import CUT
from i2i.samplers.qsattn import QSAttnSampler

#: attention mode -> (attention used for the selection, attention used for the routing)
MODES = {"global": ("global", "global"), "local": ("local", "local"), "local_global": ("local", "global")}


class QSAttn(CUT):
    """Query-selected attention on the last ``num_attn_layers`` NCE layers.

    Args:
        feature_channels: channels of the generator at ``nce_layers``.
        nce_layers: generator module indices whose outputs are contrasted.
        attention: ``global`` | ``local`` | ``local_global`` (the paper's three models).
        window: local window w (7 published).
        num_attn_layers: how many of the last NCE layers use QS-Attn (2 published; all = the supplementary's variant).
        selection: ``entropy`` (paper) | ``random`` | ``max_mean`` (Informer Eq. 6).
        selection_attention: ``global`` | ``local`` | None (None = from ``attention``).
        routing: route the values through the selected attention rows (False = contrast the features at the ids).
        routing_attention: ``global`` | ``local`` | None (None = from ``attention``).
        routing_domain: ``cross`` (source rows route both images) | ``self`` (each image its own rows, same ids).
        chunk_size: rows per chunk of the selection score; 0 = straightforward whole-matrix path (as published).
        **kwargs: the :class:`~i2i.methods.cut.CUT` arguments (num_patches, nc, tau, lambda_nce, nce_idt, sampler, ...).
    """

    def __init__(self, feature_channels: Sequence[int], nce_layers: Sequence[int] = (0, 4, 8, 12, 16),
                 attention: str = "global", window: int = 7, num_attn_layers: int = 2, selection: str = "entropy",
                 selection_attention: str | None = None, routing: bool = True, routing_attention: str | None = None,
                 routing_domain: str = "cross", chunk_size: int = 512, **kwargs) -> None:
        kwargs.setdefault("name", "qsattn")
        super().__init__(feature_channels, nce_layers, **kwargs)
        if attention not in MODES:
            raise ValueError(f"method.attention={attention!r}: use one of {', '.join(MODES)}")
        if not 0 <= num_attn_layers <= len(self.nce_layers):
            raise ValueError(f"method.num_attn_layers={num_attn_layers}: must be between 0 and the number of "
                             f"nce_layers ({len(self.nce_layers)})")
        self.attention = attention
        self.attn_positions = frozenset(range(len(self.nce_layers) - num_attn_layers, len(self.nce_layers)))
        sel_default, route_default = MODES[attention]
        self.attn_sampler = QSAttnSampler(
            selection=selection, selection_attention=selection_attention or sel_default,
            routing_attention=(routing_attention or route_default) if routing else None,
            routing_domain=routing_domain, window=window, chunk_size=chunk_size)

    def sampler_for(self, layer_pos: int):
        """QS-Attn on the last ``num_attn_layers`` layer positions, ``self.sampler`` elsewhere."""
        return self.attn_sampler if layer_pos in self.attn_positions else self.sampler
