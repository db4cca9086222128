"""Find the image and label columns of a Hugging Face dataset from its features (overridable in the config)."""

from __future__ import annotations

import datasets

from ..errors import DataError

__all__ = ["detect_columns"]

_LABEL_PREFERENCE = ("label", "fine_label", "labels", "target", "class", "category")
_IMAGE_PREFERENCE = ("img", "image", "images", "pixel_values")
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


def _is_label_feature(feature) -> bool:
    return isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype in _INT_DTYPES
    )


def detect_columns(
    features: datasets.Features, image_column: str | None = None, label_column: str | None = None
) -> tuple[str, str]:
    """Return ``(image_column, label_column)``.

    The image column is the one of ``Image`` type; the label column is the ``ClassLabel`` one (``label`` or
    ``fine_label`` preferred when several exist, as in CIFAR-100's fine/coarse labels), else an integer column
    with a conventional name. Explicit names are checked and win.
    """
    names = list(features)
    listing = ", ".join(f"{n} ({type(features[n]).__name__})" for n in names)
    if image_column is not None:
        if image_column not in features:
            raise DataError(f"image column '{image_column}' not in the dataset (columns: {listing})")
        if not isinstance(features[image_column], datasets.Image):
            raise DataError(f"column '{image_column}' is not an Image column (columns: {listing})")
    else:
        images = [n for n in names if isinstance(features[n], datasets.Image)]
        if not images:
            raise DataError(f"the dataset has no image column (columns: {listing}); "
                            "set dataset.image_column to a column of Image type")
        preferred = [n for n in _IMAGE_PREFERENCE if n in images]
        if len(images) > 1 and not preferred:
            raise DataError(f"several image columns {images}; choose one with dataset.image_column")
        image_column = preferred[0] if preferred else images[0]

    if label_column is not None:
        if label_column not in features:
            raise DataError(f"label column '{label_column}' not in the dataset (columns: {listing})")
        if not _is_label_feature(features[label_column]):
            raise DataError(f"column '{label_column}' is not a class-label column (columns: {listing})")
        return image_column, label_column
    class_labels = [n for n in names if isinstance(features[n], datasets.ClassLabel)]
    candidates = class_labels or [n for n in names if n in _LABEL_PREFERENCE and _is_label_feature(features[n])]
    if not candidates:
        raise DataError(f"the dataset has no label column (columns: {listing}); "
                        "set dataset.label_column to a ClassLabel or integer column")
    preferred = [n for n in _LABEL_PREFERENCE if n in candidates]
    if len(candidates) > 1 and not preferred:
        raise DataError(f"several label columns {candidates}; choose one with dataset.label_column")
    return image_column, (preferred[0] if preferred else candidates[0])
