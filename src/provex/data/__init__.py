"""Data: the MNIST IDX reader, synthetic crosses images and the small sample sets of the package."""

from provex.data.crosses import Crosses, crosses
from provex.data.mnist import DataNotFoundError, load_mnist, read_idx
from provex.data.samples import sample_indices, samples

__all__ = ["Crosses", "DataNotFoundError", "crosses", "load_mnist", "read_idx", "sample_indices", "samples"]
