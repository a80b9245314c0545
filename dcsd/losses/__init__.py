"""Training losses: batch-hard and weighted-regularisation triplet, label-smoothed
cross-entropy, and the DCSD objective of paper Eq. 5."""

from dcsd.losses.cross_entropy import CrossEntropyLabelSmooth
from dcsd.losses.dcsd_loss import DCSDLoss
from dcsd.losses.triplet import (
    TripletLoss,
    WeightedRegularizationTriplet,
    euclidean_distance_matrix,
)

__all__ = [
    "CrossEntropyLabelSmooth",
    "DCSDLoss",
    "TripletLoss",
    "WeightedRegularizationTriplet",
    "euclidean_distance_matrix",
]
