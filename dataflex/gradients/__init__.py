"""Per-example gradient features: one batched backward, transforms, streaming projection, storage."""

from dataflex.gradients.dataset_pass import compute_features
from dataflex.gradients.features import num_trainable, per_example_features, per_example_losses
from dataflex.gradients.store import FeatureStore, FeatureStoreError
from dataflex.gradients.transforms import TRANSFORMS, AdamMoments, AdamState

__all__ = [
    "TRANSFORMS",
    "AdamMoments",
    "AdamState",
    "FeatureStore",
    "FeatureStoreError",
    "compute_features",
    "num_trainable",
    "per_example_features",
    "per_example_losses",
]
