"""Data: the MNIST IDX reader and the small sample sets that ship inside the package."""

from provex.data.mnist import DataNotFoundError, load_mnist, read_idx
from provex.data.samples import sample_indices, samples

__all__ = ["DataNotFoundError", "load_mnist", "read_idx", "sample_indices", "samples"]
