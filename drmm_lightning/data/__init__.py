"""Data: in-memory image sets, class-balanced labeled splits, two-stream loaders and the DataModule."""

from drmm_lightning.data.datamodule import STREAMS, DRMMDataModule
from drmm_lightning.data.datasets import DATASETS, load_dataset
from drmm_lightning.data.images import ImageData
from drmm_lightning.data.root import DataNotFoundError, resolve_data_root
from drmm_lightning.data.samplers import ShardedSampler, StreamSampler
from drmm_lightning.data.splits import INDEX_FILE, Split, SplitConfig, draw_split
from drmm_lightning.data.transforms import BatchTransform

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
