"""The exercise checks of notebooks 01 and 02: they pass the reference solutions, name
the common mistakes, explain wrong shapes, and fall back to the library for stubs."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import numpy as np
import pytest
import torch

from solo_lib.data.cis680 import mask_offsets
from solo_lib.exercises import data as data_exercises
from solo_lib.exercises import targets as target_exercises
from solo_lib.paths import REPO_ROOT
from solo_lib.targets_loop import center_region, mask_target, object_levels


def load_solution(name: str) -> ModuleType:
    """solutions/<name>.py, loaded by path: a top-level `data` folder shadows `import data`."""
    spec = importlib.util.spec_from_file_location(
        f"solutions_{name}", REPO_ROOT / "solutions" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


solution_data = load_solution("data")
solution_targets = load_solution("targets")

CHECKS = [
    (data_exercises.check_mask_offsets, solution_data.my_mask_offsets, mask_offsets, 3),
    (target_exercises.check_object_levels, solution_targets.my_object_levels, object_levels, 2),
    (target_exercises.check_center_region, solution_targets.my_center_region, center_region, 8),
    (target_exercises.check_mask_target, solution_targets.my_mask_target, mask_target, 4),
]


@pytest.mark.parametrize("check, solution, library, num_cases", CHECKS)
def test_the_reference_solution_passes_and_is_used(check, solution, library, num_cases, capsys):
    assert check(solution) is solution
    assert f"correct on all {num_cases} cases" in capsys.readouterr().out


@pytest.mark.parametrize("check, solution, library, num_cases", CHECKS)
def test_a_stub_is_not_attempted_and_the_library_is_used(
    check, solution, library, num_cases, capsys
):
    def stub(*args):
        raise NotImplementedError

    assert check(stub) is library
    assert "not attempted yet: the library's version is used below" in capsys.readouterr().out


def test_offsets_as_a_list_or_a_tensor_are_accepted(capsys):
    def as_list(labels):
        return [0, *np.cumsum([len(x) for x in labels]).tolist()]

    assert data_exercises.check_mask_offsets(as_list) is as_list
    assert "correct on all" in capsys.readouterr().out


@pytest.mark.parametrize(
    "check, wrong, hint",
    [
        (
            data_exercises.check_mask_offsets,
            lambda labels: np.concatenate([[0], np.cumsum([x.sum() for x in labels])]),
            "are the label values summed?",
        ),
        (
            data_exercises.check_mask_offsets,
            lambda labels: np.array([0] + [len(x) for x in labels]),
            "are these the counts, not their cumulative sum?",
        ),
        (
            target_exercises.check_object_levels,
            lambda b, r: target_exercises._levels_written_out(b, r, bounds="upper open"),
            "is the range half-open, lo <= s < hi?",
        ),
        (
            target_exercises.check_object_levels,
            lambda b, r: target_exercises._levels_written_out(b, r, bounds="lower open"),
            "is the range half-open, lo < s <= hi?",
        ),
        (
            target_exercises.check_object_levels,
            lambda b, r: target_exercises._levels_written_out(b, r, first_only=True),
            "is the object sent to its first level only?",
        ),
        (
            target_exercises.check_object_levels,
            lambda b, r: target_exercises._levels_written_out(b, r, scale="area"),
            "is the area w h compared",
        ),
        (
            target_exercises.check_object_levels,
            lambda b, r: target_exercises._levels_written_out(b, r, scale="longer"),
            "is the longer side max(w, h) compared",
        ),
        (
            target_exercises.check_center_region,
            lambda *a: target_exercises._region_written_out(*a, centre="box"),
            "is the centre the box centre?",
        ),
        (
            target_exercises.check_center_region,
            lambda *a: target_exercises._region_written_out(*a, cut=False),
            "missing its cut to the 3 x 3 cells",
        ),
        (
            target_exercises.check_center_region,
            lambda *a: target_exercises._region_written_out(*a, half=False),
            "instead of +- epsilon * w / 2?",
        ),
        (
            target_exercises.check_center_region,
            lambda *a: target_exercises._region_written_out(*a, clamp=False),
            "are the cell indices clamped to [0, S - 1]?",
        ),
        (
            target_exercises.check_center_region,
            lambda *a: center_region(*a).T,
            "are rows and columns swapped?",
        ),
        (
            target_exercises.check_mask_target,
            target_exercises._mask_by("nearest"),
            "is it nearest-neighbour sampling?",
        ),
        (
            target_exercises.check_mask_target,
            target_exercises._mask_by("bilinear"),
            "is it bilinear sampling?",
        ),
        (
            target_exercises.check_mask_target,
            target_exercises._mask_strict,
            "is the threshold coverage > 0.5?",
        ),
    ],
)
def test_common_mistakes_are_named(check, wrong, hint, capsys):
    assert check(wrong) is not wrong
    out = capsys.readouterr().out
    assert "Your values match a common mistake" in out and hint in out


def test_a_box_centre_mistake_names_both_centres_and_the_cell(capsys):
    """On the hand-made L shape the centre of mass (132.2, 107.8) lies in cell (5, 4) of
    the S = 12 grid (29.3 x 21.3 px cells), the box centre (150, 90) in cell (4, 5)."""
    target_exercises.check_center_region(
        lambda *a: target_exercises._region_written_out(*a, centre="box")
    )
    out = capsys.readouterr().out
    assert "hand-made L shape" in out
    assert "centre of mass (132.2, 107.8), box centre (150.0, 90.0)" in out
    assert "expected cells rows 4..5, cols 4..4" in out and "at index (" in out


@pytest.mark.parametrize(
    "check, wrong, expected",
    [
        (
            data_exercises.check_mask_offsets,
            lambda labels: np.cumsum([len(x) for x in labels]),
            "expected shape (4,) (N + 1 offsets for N images, from 0 to the number of masks), "
            "got (3,)",
        ),
        (
            target_exercises.check_object_levels,
            lambda b, r: object_levels(b, r).T,
            "expected shape (4, 5) (one row per box and one column per level), got (5, 4)",
        ),
        (
            target_exercises.check_center_region,
            lambda mask, box, s, eps: mask.bool(),
            "expected shape (12, 12) (one entry per cell of the S x S grid, indexed [row, col]), "
            "got (256, 352)",
        ),
        (
            target_exercises.check_mask_target,
            lambda mask, size: mask,
            "expected shape (2, 2) (the level's mask size), got (8, 8)",
        ),
    ],
)
def test_a_wrong_shape_is_explained_with_the_expected_form(check, wrong, expected, capsys):
    check(wrong)
    assert expected in capsys.readouterr().out


def test_a_missing_leading_zero_is_a_shape_error_with_its_mistake_named(capsys):
    data_exercises.check_mask_offsets(lambda labels: np.cumsum([len(x) for x in labels]))
    assert "is the leading 0 missing?" in capsys.readouterr().out


def test_a_float_region_is_a_dtype_error(capsys):
    target_exercises.check_center_region(lambda *a: center_region(*a).float())
    assert "expected dtype torch.bool, got torch.float32" in capsys.readouterr().out


def test_the_written_out_mistakes_equal_the_references_with_no_switch_on():
    """The mistakes are switches of one written-out function; with none on it is the
    reference, so a hint can only be printed for a real mistake."""
    for case in target_exercises._levels_cases():
        assert torch.equal(
            target_exercises._levels_written_out(*case.args), object_levels(*case.args)
        )
    for case in target_exercises._region_cases():
        assert torch.equal(
            target_exercises._region_written_out(*case.args), center_region(*case.args)
        )


def test_the_library_offsets_slice_each_images_masks():
    labels = [np.array([2, 3]), np.array([], dtype=np.int64), np.array([1, 1, 1])]
    offsets = mask_offsets(labels)
    assert offsets.tolist() == [0, 2, 2, 5] and offsets.dtype == np.int64
