"""ooc: train Keras models on data that does not fit in memory.

Convert a dataset to an on-disk layout (``convert``), open any layout behind one interface
(``open_store``), iterate over shuffled batches (``batches``) and train (``ooc.train.train``).
"""

from ooc.adopt import adopt
from ooc.convert import convert
from ooc.core.version import __version__  # noqa: F401
from ooc.errors import OocError
from ooc.formats import FORMATS, get_format
from ooc.keras_data import as_pydataset, as_tf_dataset
from ooc.loader import batches
from ooc.resumable_fit import resumable_fit
from ooc.sampling import epoch_batches
from ooc.stores import MemoryStore, open_store

__all__ = [
    "FORMATS",
    "adopt",
    "MemoryStore",
    "OocError",
    "as_pydataset",
    "as_tf_dataset",
    "batches",
    "convert",
    "epoch_batches",
    "get_format",
    "open_store",
    "resumable_fit",
]
