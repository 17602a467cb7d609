"""The exercise checks: they pass the reference solutions, name the common mistakes,
report wrong shapes, and fall back to the library for stubs and crashes."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from solo_lib import exercises
from solo_lib.losses import dice_loss, focal_loss
from solo_lib.paths import REPO_ROOT
from solo_lib.postprocess import matrix_nms, points_nms

sys.path.insert(0, str(REPO_ROOT / "solutions"))
import losses as solution_losses  # noqa: E402
import postprocess as solution_postprocess  # noqa: E402

CHECKS = [
    (exercises.check_focal_loss, solution_losses.my_focal_loss, focal_loss),
    (exercises.check_dice_loss, solution_losses.my_dice_loss, dice_loss),
    (exercises.check_points_nms, solution_postprocess.my_points_nms, points_nms),
    (exercises.check_matrix_nms, solution_postprocess.my_matrix_nms, matrix_nms),
]


@pytest.mark.parametrize("check, solution, library", CHECKS)
def test_the_reference_solution_passes_and_is_used(check, solution, library, capsys):
    assert check(solution) is solution
    assert re.search(r"correct on all \d+ cases", capsys.readouterr().out)


@pytest.mark.parametrize("check, solution, library", CHECKS)
def test_a_stub_is_not_attempted_and_the_library_is_used(check, solution, library, capsys):
    def stub(*args):
        raise NotImplementedError

    assert check(stub) is library
    assert "not attempted yet: the library's version is used below" in capsys.readouterr().out


def test_a_crash_is_reported_with_the_case_and_the_library_used(capsys):
    def broken(logits, targets, alpha, gamma):
        return logits @ targets  # (N, C) @ (N, C): a shape error

    assert exercises.check_focal_loss(broken) is focal_loss
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "hand-made logits" in out


def test_a_summed_focal_loss_is_a_shape_error_with_the_expected_form(capsys):
    exercises.check_focal_loss(lambda *args: focal_loss(*args).sum())
    out = capsys.readouterr().out
    assert "expected shape (2, 3) (the same shape as the input, one value per entry), got ()" in out


@pytest.mark.parametrize(
    "check, wrong, hint",
    [
        (
            exercises.check_focal_loss,
            lambda x, t, a, g: focal_loss(x, t, 1 - a, g),
            "is alpha applied to the negatives",
        ),
        (
            exercises.check_focal_loss,
            lambda x, t, a, g: focal_loss(x, t, a, 0.0),
            "is the modulating factor (1 - p_t)^gamma missing?",
        ),
        (
            exercises.check_focal_loss,
            lambda x, t, a, g: focal_loss(x.sigmoid(), t, a, g),
            "is the sigmoid applied twice",
        ),
        (
            exercises.check_dice_loss,
            lambda p, q: (
                1
                - 2 * (p * q).flatten(1).sum(1) / (p.flatten(1).sum(1) + q.flatten(1).sum(1) + 1e-3)
            ),
            "instead of sum p^2 + sum q^2",
        ),
        (exercises.check_dice_loss, lambda p, q: 1 - dice_loss(p, q), "the dice coefficient"),
        (
            exercises.check_points_nms,
            lambda h: h * (torch.nn.functional.max_pool2d(h, 3, 1, 1) == h),
            "is the window 3x3 around the cell?",
        ),
        (
            exercises.check_matrix_nms,
            lambda m, lab, s, k, sig: exercises.postprocess._matrix_nms_decays(
                m, lab, s, k, sig, compensate=False
            ),
            "is the compensation f(comp_i) missing",
        ),
        (
            exercises.check_matrix_nms,
            lambda m, lab, s, k, sig: exercises.postprocess._matrix_nms_decays(
                m, lab, s, k, sig, across_classes=True
            ),
            "do masks of other classes decay each other?",
        ),
        (
            exercises.check_matrix_nms,
            lambda m, lab, s, k, sig: exercises.postprocess._matrix_nms_decays(
                m, lab, s, k, sig, sort=False
            ),
            "instead of sorted by score?",
        ),
    ],
)
def test_common_mistakes_are_named(check, wrong, hint, capsys):
    assert check(wrong) is not wrong
    out = capsys.readouterr().out
    assert "Your values match a common mistake" in out and hint in out


def test_the_hand_made_focal_case_names_the_index_and_both_values(capsys):
    """Entry (0, 0): logit 2 on a positive, alpha 0.25, gamma 2: p = sigmoid(2) = 0.8808,
    FL = 0.25 * (1 - 0.8808)^2 * -log(0.8808) = 0.25 * 0.01421 * 0.1269 = 0.00045. Without
    alpha_t (weight 1): 0.0018. The largest difference of the case is elsewhere, but the
    message names an index and both values there."""
    expected = 0.25 * (1 - torch.tensor(2.0).sigmoid()) ** 2 * -torch.tensor(2.0).sigmoid().log()
    assert focal_loss(torch.tensor([2.0]), torch.tensor([1]), 0.25, 2.0).item() == pytest.approx(
        float(expected)
    )
    assert float(expected) == pytest.approx(0.00045, abs=1e-5)
    exercises.check_focal_loss(lambda x, t, a, g: focal_loss(x, t, 0.5, g) * 2)
    out = capsys.readouterr().out
    assert "wrong on hand-made logits" in out and "is alpha_t missing" in out
    assert "at index (" in out and ", expected " in out


def test_the_written_out_matrix_nms_equals_the_librarys():
    """The mistakes are switches of one written-out Matrix NMS; with none on, it is the
    library's, so a hint can only be printed for a real mistake."""
    for case in exercises.postprocess._matrix_cases():
        torch.testing.assert_close(
            exercises.postprocess._matrix_nms_decays(*case.args), matrix_nms(*case.args)
        )


def test_masks_to_original_passes_the_solution_and_names_each_mistake(capsys):
    """The solution passes; each written-out mistake is recognised by its hint; a stub
    falls back to the library's way back (`ImageGeometry.to_original`)."""
    from solo_lib.exercises.postprocess import (
        _to_original_no_flip,
        _to_original_top_left,
        _to_original_uncropped,
    )

    check = exercises.check_masks_to_original
    assert (
        check(solution_postprocess.my_masks_to_original)
        is solution_postprocess.my_masks_to_original
    )
    assert "correct on all 5 cases" in capsys.readouterr().out
    for wrong, hint in [
        (_to_original_uncropped, "is the padding cropped away?"),
        (_to_original_no_flip, "is the flip undone?"),
        (_to_original_top_left, "is the content taken from the top-left corner?"),
    ]:
        assert check(wrong) is not wrong
        assert hint in capsys.readouterr().out

    def stub(maps, geometry):
        raise NotImplementedError

    fallback = check(stub)
    assert "not attempted yet" in capsys.readouterr().out
    block = torch.zeros(1, 4, 6)
    block[0, 1:3, 1:3] = 1.0
    from solo_lib.data.geometry import ImageGeometry

    geometry = ImageGeometry((16, 20), (8, 12), (8, 10), flipped=True)
    torch.testing.assert_close(fallback(block, geometry), geometry.to_original(block))


def test_masks_to_original_hand_case_by_hand():
    """The hand-made case worked out. The 2x2 block covers rows and columns [1, 3) of a
    4x6 map, centre (2, 2) in map units. The 8x12 input is twice the map: centre (4, 4).
    Its content starts after 1 px of padding: (4, 3) in the 8x10 content. The original
    is twice the content: centre (y 8, x 6); mirrored, x becomes 20 - 6 = 14. Bilinear
    resizing spreads the block symmetrically, so the centre of mass stays there (to 0.01 px:
    the spread reaches the content's first column, where the resize clamps)."""
    from solo_lib.data.geometry import ImageGeometry

    block = torch.zeros(1, 4, 6)
    block[0, 1:3, 1:3] = 1.0
    ys, xs = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(20) + 0.5, indexing="ij")
    for flipped, centre_x in [(False, 6.0), (True, 14.0)]:
        geometry = ImageGeometry((16, 20), (8, 12), (8, 10), flipped=flipped)
        out = solution_postprocess.my_masks_to_original(block, geometry)[0]  # (16, 20)
        assert out.shape == (16, 20)
        centre = ((out * ys).sum() / out.sum(), (out * xs).sum() / out.sum())
        torch.testing.assert_close(
            torch.stack(centre), torch.tensor([8.0, centre_x]), atol=0.01, rtol=0
        )


def _solution(name: str):
    """The reference solution ``my_<name>`` from solutions/ (loaded by path: the
    repository's data/ folder would shadow ``import data``)."""
    import importlib.util

    for path in sorted((REPO_ROOT / "solutions").glob("*.py")):
        if f"def my_{name}(" in path.read_text():
            spec = importlib.util.spec_from_file_location(f"solution_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return getattr(module, f"my_{name}")
    raise LookupError(name)


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_the_contract_passes_references_and_solutions_and_raises_on_mistakes(name):
    """EXERCISES[name] returns None for the reference and the solutions/ function, and
    raises AssertionError with the check's explanation for a stub and for a result of
    the wrong form; reference(name) is the function a stub falls back to."""
    verify = exercises.EXERCISES[name]
    assert verify(exercises.reference(name)) is None
    assert verify(_solution(name)) is None

    def stub(*args):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not attempted yet"):
        verify(stub)
    with pytest.raises(AssertionError, match=f"{name}: wrong on"):
        verify(lambda *args: torch.zeros(1, 2, 3, 4, 5))  # a 5-d result: no exercise's form
    with pytest.raises(KeyError, match="unknown exercise"):
        exercises.reference("nms")
