"""The exercises as a table, for tests and instructors: `EXERCISES` and `reference`.

The notebooks call ``check_<name>(fn)``, which prints its verdict and returns the
function to go on with (the learner's when right, the library's otherwise), so that a
notebook always runs to the end. Outside a notebook a strict form is handier:
``EXERCISES[name](fn)`` returns None when `fn` is right and raises `AssertionError`
with the check's explanation when it is not (a stub counts as not right).
``reference(name)`` is the function the check compares against: what the notebook
uses until the learner's passes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

from solo_lib.exercises.data import check_mask_offsets
from solo_lib.exercises.losses import check_dice_loss, check_focal_loss
from solo_lib.exercises.model import check_coord_features
from solo_lib.exercises.postprocess import (
    check_masks_to_original,
    check_matrix_nms,
    check_points_nms,
)
from solo_lib.exercises.schedule import check_learning_rate
from solo_lib.exercises.targets import check_center_region, check_mask_target, check_object_levels

#: Exercise name -> its notebook check, in course order.
NOTEBOOK_CHECKS: dict[str, Callable[[Callable], Callable]] = {
    "mask_offsets": check_mask_offsets,  # 01
    "object_levels": check_object_levels,  # 02
    "center_region": check_center_region,  # 02
    "mask_target": check_mask_target,  # 02
    "coord_features": check_coord_features,  # 03
    "focal_loss": check_focal_loss,  # 03
    "dice_loss": check_dice_loss,  # 03
    "learning_rate": check_learning_rate,  # 04
    "points_nms": check_points_nms,  # 05
    "matrix_nms": check_matrix_nms,  # 05
    "masks_to_original": check_masks_to_original,  # 05
}


def _not_attempted(*args: object) -> object:
    raise NotImplementedError


def _strict(check: Callable[[Callable], Callable]) -> Callable[[Callable], None]:
    """The check as "None when right, AssertionError with its explanation otherwise"."""

    def verify(fn: Callable) -> None:
        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            chosen = check(fn)
        if chosen is not fn:
            raise AssertionError(report.getvalue().strip())

    verify.__name__ = check.__name__.replace("check_", "verify_")
    verify.__doc__ = check.__doc__
    return verify


#: Exercise name -> its strict check: None when the callable is right, else AssertionError.
EXERCISES: dict[str, Callable[[Callable], None]] = {
    name: _strict(check) for name, check in NOTEBOOK_CHECKS.items()
}


def reference(name: str) -> Callable:
    """The function exercise `name` is checked against (what a stub falls back to)."""
    if name not in NOTEBOOK_CHECKS:
        raise KeyError(f"unknown exercise {name!r}; expected one of {list(NOTEBOOK_CHECKS)}")
    with contextlib.redirect_stdout(io.StringIO()):
        return NOTEBOOK_CHECKS[name](_not_attempted)
