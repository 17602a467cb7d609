"""Checks for the learner's own versions of SOLO's core pieces.

Each ``check_<name>(fn)`` runs the learner's `fn` on hand-made cases and on seeded
random ones, against the library's function, and prints what is wrong, not only that
something is: a wrong shape or dtype with the expected form, or a wrong value with the
likely cause (the common mistakes are computed too, and recognised when the learner's
values match one of them). It returns the function the notebook goes on with: the
learner's when every case passes, otherwise the library's, so that a notebook runs top
to bottom whatever the state of its exercises. A stub that still raises
`NotImplementedError` is "not attempted yet". Reference solutions, for when you are
stuck: ``solutions/`` at the repository root.

One module per notebook's exercises; the shared machinery is `check`; `EXERCISES` and
`reference(name)` (module `contract`) list them for tests and instructors.
"""

from solo_lib.exercises.check import Case, run_check
from solo_lib.exercises.contract import EXERCISES, reference
from solo_lib.exercises.data import check_mask_offsets
from solo_lib.exercises.losses import check_dice_loss, check_focal_loss
from solo_lib.exercises.model import check_coord_features
from solo_lib.exercises.postprocess import (
    check_masks_to_original,
    check_matrix_nms,
    check_points_nms,
)
from solo_lib.exercises.schedule import check_learning_rate
from solo_lib.exercises.targets import (
    check_center_region,
    check_mask_target,
    check_object_levels,
)

__all__ = [
    "EXERCISES",
    "Case",
    "check_center_region",
    "check_coord_features",
    "check_dice_loss",
    "check_focal_loss",
    "check_learning_rate",
    "check_mask_offsets",
    "check_mask_target",
    "check_masks_to_original",
    "check_matrix_nms",
    "check_object_levels",
    "check_points_nms",
    "reference",
    "run_check",
]
