"""i2i: unpaired image-to-image translation with contrastive learning (CUT, FastCUT, QS-Attn, EnCo, ASGIT feedback)."""

__version__ = "0.1.0"
