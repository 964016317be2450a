"""Patch samplers: which locations become anchors, positives and negatives (random, QS-Attn, DAG)."""

from i2i.samplers.base import SampleContext

__all__ = ["SampleContext"]
