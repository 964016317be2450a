"""Evaluation metrics: FID (pytorch-fid protocol), KID (target / fused), SWD, precision/recall. See docs/metrics.md."""

from i2i.metrics.cache import StatsCache, default_cache_dir
from i2i.metrics.evaluate import METRICS, MetricSuite, evaluate_folders, write_metrics_json
from i2i.metrics.features import (
                                  InceptionExtractor,
                                  MockExtractor,
                                  extract_features,
                                  list_images,
                                  make_extractor,
                                  tensor_to_uint8,
)
from i2i.metrics.fid import frechet_distance
from i2i.metrics.kid import kid
from i2i.metrics.prdc import precision_recall
from i2i.metrics.stats import FeatureStats, StreamingStats

__all__ = ["METRICS", "FeatureStats", "InceptionExtractor", "MetricSuite", "MockExtractor", "StatsCache",
           "StreamingStats", "default_cache_dir", "evaluate_folders", "extract_features", "frechet_distance", "kid",
           "list_images", "make_extractor", "precision_recall", "tensor_to_uint8", "write_metrics_json"]
