"""Exercises of notebook 01: the per-image offsets into the flat mask array (1.2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from solo_lib.data.cis680 import mask_offsets
from solo_lib.exercises.check import Case, run_check


# --- the offsets (notebook 01) -------------------------------------------------------------
def _offsets_cases() -> list[Case]:
    generator = np.random.default_rng(4)
    first = [np.array([2, 3]), np.array([2, 2, 3]), np.array([1, 1, 1, 2, 3, 1])]
    gap = [np.array([1]), np.array([], dtype=np.int64), np.array([3, 3])]
    random = [generator.integers(1, 4, size=generator.integers(0, 7)) for _ in range(50)]
    return [
        Case(
            "the labels of notebook 01's first three images, [2, 3], [2, 2, 3], "
            "[1, 1, 1, 2, 3, 1] (offsets [0, 2, 5, 11])",
            (first,),
        ),
        Case(
            "three images, the middle one without objects: [1], [], [3, 3] (offsets "
            "[0, 1, 1, 3]: image 1 owns the empty slice 1:1)",
            (gap,),
        ),
        Case("seeded random labels of 50 images with 0 to 6 objects each", (random,)),
    ]


def _as_tensor(result: object) -> object:
    """A numpy array or list as a tensor, so that the checks compare it; anything else as is."""
    if isinstance(result, (np.ndarray, list, tuple)):
        return torch.as_tensor(np.asarray(result))
    return result


def _cumsum_without_zero(labels: Sequence[np.ndarray]) -> np.ndarray:
    return np.cumsum([len(x) for x in labels])


def _starts_only(labels: Sequence[np.ndarray]) -> np.ndarray:
    return mask_offsets(labels)[:-1]


def _summed_labels(labels: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([int(np.sum(x)) for x in labels])])


def _counts(labels: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([0] + [len(x) for x in labels])


def check_mask_offsets(fn: Callable[[Sequence[np.ndarray]], np.ndarray]) -> Callable:
    """Check ``fn(labels)``: the offsets of each image's masks in the flat mask array.

    labels: a sequence of N integer arrays, entry i the labels (n_i,) of image i.
    Returns (N + 1,) integers, offsets[0] = 0, image i owning masks
    offsets[i]:offsets[i + 1]. A numpy array, a list or a tensor are all accepted.
    """

    def learner(labels: Sequence[np.ndarray]) -> object:
        return _as_tensor(fn(labels))

    def library(labels: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(mask_offsets(labels))

    mistakes = {
        "is the leading 0 missing? offsets[0] = 0: image 0's masks start at the first one": (
            lambda labels: torch.from_numpy(_cumsum_without_zero(labels))
        ),
        "is the total missing? offsets[N], the number of masks, ends image N - 1's slice": (
            lambda labels: torch.from_numpy(_starts_only(labels))
        ),
        "are the label values summed? Each image owns one mask per label, len(labels[i])": (
            lambda labels: torch.from_numpy(_summed_labels(labels))
        ),
        "are these the counts, not their cumulative sum? np.cumsum adds them up": (
            lambda labels: torch.from_numpy(_counts(labels))
        ),
    }
    form = "N + 1 offsets for N images, from 0 to the number of masks"
    chosen = run_check("mask_offsets", learner, library, _offsets_cases(), mistakes, form=form)
    return fn if chosen is learner else mask_offsets
