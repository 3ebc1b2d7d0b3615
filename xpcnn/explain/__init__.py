"""Looking into a trained network: the filters of its first convolution, the feature maps
its stages make of an image, and which parts of the image its answer rests on
(occlusion). xpcnn.explain.maps computes them as arrays; xpcnn.explain.drawing draws
them (matplotlib); explain_files does both for image files and a saved model, as `xpcnn
explain` does."""

from .files import Explained, Explanations, explain_files
from .maps import Occlusion, feature_maps, first_filters, occlusion, stages

__all__ = ["Explained", "Explanations", "Occlusion", "explain_files", "feature_maps", "first_filters", "occlusion",
           "stages"]
