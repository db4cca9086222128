"""Data: dataset loading (Hub id, local folder, embedded digits), long-tail subsets, batched augmentation."""

from .augment import BatchTransform, normalize, random_crop_flip
from .columns import detect_columns
from .digits import DIGITS_MEAN, DIGITS_STD, load_digits_splits
from .loader import ClassBalancedSampler, EpochShuffleSampler, TensorImageDataset, make_loader
from .longtail import LongTailSplit, indices_sha256, longtail_counts, make_longtail_split, shot_group
from .prepare import PreparedData, prepare_data
from .sources import ImageSplits, load_image_splits

__all__ = [
    "DIGITS_MEAN",
    "DIGITS_STD",
    "ClassBalancedSampler",
    "EpochShuffleSampler",
    "BatchTransform",
    "ImageSplits",
    "LongTailSplit",
    "PreparedData",
    "TensorImageDataset",
    "detect_columns",
    "indices_sha256",
    "load_digits_splits",
    "load_image_splits",
    "longtail_counts",
    "make_loader",
    "make_longtail_split",
    "normalize",
    "prepare_data",
    "random_crop_flip",
    "shot_group",
]
