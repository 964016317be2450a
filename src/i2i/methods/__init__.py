"""Methods: the content losses and everything they own (projection heads, samplers, extra networks)."""
