"""ooc: train Keras models on data that does not fit in memory.

Convert a dataset to an on-disk layout (``convert``), open any layout behind one interface
(``open_store``), iterate over shuffled batches (``batches``) and train (``ooc.train.train``).
"""

__version__ = "0.1.0"

from ooc.adopt import adopt  # noqa: E402
from ooc.convert import convert  # noqa: E402
from ooc.errors import OocError  # noqa: E402
from ooc.formats import FORMATS, get_format  # noqa: E402
from ooc.keras_data import as_pydataset, as_tf_dataset  # noqa: E402
from ooc.loader import batches  # noqa: E402
from ooc.resumable_fit import resumable_fit  # noqa: E402
from ooc.sampling import epoch_batches  # noqa: E402
from ooc.stores import MemoryStore, open_store  # noqa: E402

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
