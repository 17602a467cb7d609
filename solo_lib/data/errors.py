"""Malformed input: the error that every data loader raises, and the checks and the
warning that both file formats (CIS 680 and COCO) share."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: How many left-out objects a warning lists by name; the rest are counted.
LISTED_OBJECTS = 10


class DataFormatError(ValueError):
    """A data file does not have the expected form.

    The message names the file, the key or index at fault and the form that was
    expected, so that a broken download or a custom data set can be fixed without
    reading the loader's source.
    """


def warn_objects_without_pixels(source: Path, empty: list[str], total: int, kind: str) -> None:
    """One warning for the `empty` objects (of `total` `kind`) that a data set leaves out.

    Their mask covers no pixel of the image (a polygon outside it, or one without area):
    such an object can never be found, and kept it would lower recall. They are left
    out, not refused, because otherwise sound files hold a few (slivers and stray
    polygons from annotation tools), and refusing would stop a whole data set for them:
    torchvision's and Detectron2's COCO loaders drop such annotations as well. `empty`
    names each object, e.g. "annotation id 7 (image id 2, 30x20)".
    """
    listed = ", ".join(empty[:LISTED_OBJECTS])
    if len(empty) > LISTED_OBJECTS:
        listed += f" and {len(empty) - LISTED_OBJECTS} more"
    warnings.warn(
        f"{source}: left out {len(empty)} of {total} {kind} whose mask covers no pixel of "
        f"its WxH image (such an object can never be found): {listed}",
        stacklevel=3,
    )


def refuse_training_without_objects(source: Path, num_objects: int, num_images: int) -> None:
    """Refuse a training set whose `num_images` images hold `num_objects` = 0 objects.

    It would train on nothing, without a word: mask AP nan, a "best" checkpoint at -inf.
    Crowd regions (not trained on) and objects without pixels (left out) do not count.
    Only training needs objects: evaluation and prediction take such images.
    """
    if num_objects == 0:
        raise DataFormatError(
            f"{source}: no annotations to train on in the {num_images} training images "
            "(crowd regions and masks without pixels do not count); expected annotated "
            "objects (images without them can only be predicted on)"
        )


def checked_indices(indices: Sequence[int] | None, n: int) -> np.ndarray:
    """int64 positions `indices` (None: all) in a data set of `n` images; IndexError if outside."""
    chosen = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= n):
        raise IndexError(f"indices must lie in [0, {n}); got {chosen.min()}..{chosen.max()}")
    return chosen
