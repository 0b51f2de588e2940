"""Data: in-memory image sets, class-balanced labeled splits,
two-stream loaders and the DataModule."""

from .datamodule import STREAMS, DRMMDataModule
from .datasets import DATASETS, load_dataset
from .images import ImageData
from .root import DataNotFoundError, resolve_data_root
from .samplers import ShardedSampler, StreamSampler
from .splits import INDEX_FILE, Split, SplitConfig, draw_split
from .transforms import BatchTransform

__all__ = [
    "DATASETS",
    "INDEX_FILE",
    "STREAMS",
    "BatchTransform",
    "DRMMDataModule",
    "DataNotFoundError",
    "ImageData",
    "ShardedSampler",
    "Split",
    "SplitConfig",
    "StreamSampler",
    "draw_split",
    "load_dataset",
    "resolve_data_root",
]
