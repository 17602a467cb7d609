"""The exercise checks: they pass the reference solutions, name the common mistakes,
report wrong shapes, and fall back to the library for stubs and crashes."""

from __future__ import annotations

import math
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
def test_the_contract_passes_the_solution_and_calls_a_stub_not_attempted(name):
    """EXERCISES[name] returns None for the solutions/ function and raises AssertionError
    "not attempted yet" for a stub; an unknown name is a KeyError."""
    verify = exercises.EXERCISES[name]
    assert verify(_solution(name)) is None

    def stub(*args):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not attempted yet"):
        verify(stub)
    with pytest.raises(KeyError, match="unknown exercise"):
        exercises.reference("nms")


# --- learners' functions, right and wrong, written independently of the library ----------
# Each right one is written another way than the library's (a loop for a vectorised
# reference, pooling for interpolation, ...); each wrong one makes one mistake a learner
# makes (an off-by-one, a wrong axis, a forgotten factor, ...), written as a learner would.


def _offsets_loop(labels, stop=None):
    """Offsets by a running total, over the first `stop` images (all by default)."""
    offsets = [0]
    for image_labels in labels[:stop]:
        offsets.append(offsets[-1] + image_labels.shape[0])
    return offsets


def _levels_by_level(boxes, scale_ranges, upper_open=False, use_area=False):
    """One column per level; the scale from the box's (w, h) product."""
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    scale = area if use_area else area.sqrt()
    columns = [
        (scale >= lo) & ((scale < hi) if upper_open else (scale <= hi)) for lo, hi in scale_ranges
    ]
    return torch.stack(columns, dim=1)


def _region_by_masks(mask, box, num_grid, epsilon, box_centre=False, transposed=False):
    """The centre region from a mass-weighted mean and row / column masks."""
    height, width = mask.shape
    weight = mask.double()
    if box_centre:
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    else:
        cy = float((weight.sum(1) * (torch.arange(height) + 0.5)).sum() / weight.sum())
        cx = float((weight.sum(0) * (torch.arange(width) + 0.5)).sum() / weight.sum())
    half_w = epsilon * float(box[2] - box[0]) / 2
    half_h = epsilon * float(box[3] - box[1]) / 2

    def cell(coord, extent):
        return sorted((0, math.floor(coord * num_grid / extent), num_grid - 1))[1]

    def span(centre, half, extent):
        middle = cell(centre, extent)
        first = max(cell(centre - half, extent), middle - 1)
        last = min(cell(centre + half, extent), middle + 1)
        index = torch.arange(num_grid)
        return (index >= first) & (index <= last)

    rows, cols = span(cy, half_h, height), span(cx, half_w, width)
    if transposed:  # region[left:right + 1, top:bottom + 1]: x indexes the rows
        rows, cols = cols, rows
    return rows[:, None] & cols[None, :]


def _mask_target_by_pooling(mask, size, strict=False):
    """Block averages by an average pool whose kernel is the block."""
    block = (mask.shape[0] // size[0], mask.shape[1] // size[1])
    coverage = torch.nn.functional.avg_pool2d(mask[None, None].float(), block)[0, 0]
    return ((coverage > 0.5) if strict else (coverage >= 0.5)).to(torch.uint8)


def _mask_target_by_slicing(mask, size):
    """One pixel per block, its top-left one: a nearest-neighbour sample."""
    return mask[:: mask.shape[0] // size[0], :: mask.shape[1] // size[1]].clone()


def _coords_by_arange(feature, y_up=False, endpoint=True):
    """x and y from an arange scaled to [-1, 1], repeated over the batch and the rows."""
    b, _, h, w = feature.shape

    def axis(n):
        step = 2 / (n - 1) if endpoint else 2 / n
        return torch.arange(n, dtype=feature.dtype) * step - 1

    y = -axis(h) if y_up else axis(h)
    x_channel = axis(w).view(1, 1, 1, w).repeat(b, 1, h, 1)
    y_channel = y.view(1, 1, h, 1).repeat(b, 1, 1, w)
    return torch.cat([x_channel, y_channel], dim=1)


def _focal_by_log_sigmoids(logits, targets, alpha, gamma, swap_alpha=False, modulate=True):
    """The focal loss from log-sigmoids, the positive and negative terms apart."""
    t = targets.float()
    p = logits.sigmoid()
    weight_pos, weight_neg = (1 - alpha, alpha) if swap_alpha else (alpha, 1 - alpha)
    gamma = gamma if modulate else 0.0
    positive = -weight_pos * (1 - p) ** gamma * torch.nn.functional.logsigmoid(logits)
    negative = -weight_neg * p**gamma * torch.nn.functional.logsigmoid(-logits)
    return t * positive + (1 - t) * negative


def _dice_by_einsum(pred, target, squares=True, one_minus=True):
    """The dice loss with an einsum for the overlap and sums over (h, w)."""
    q = target.float()
    overlap = torch.einsum("phw,phw->p", pred, q)
    if squares:
        total = pred.pow(2).sum(dim=(1, 2)) + q.pow(2).sum(dim=(1, 2))
    else:
        total = pred.sum(dim=(1, 2)) + q.sum(dim=(1, 2))
    coefficient = 2 * overlap / (total + 1e-3)
    return 1 - coefficient if one_minus else coefficient


def _rate_by_factors(step, total_steps, lr, warmup_iters, warmup_ratio, from_zero=False):
    """The rate as lr times the warm-up's and the cosine's factors, the warm-up by a min
    (guarded for a run without one), the cosine as a squared half-angle cosine."""
    start = 0.0 if from_zero else warmup_ratio
    warmup = min(1.0, start + (1 - start) * step / warmup_iters) if warmup_iters else 1.0
    return lr * warmup * math.cos(math.pi * step / (2 * total_steps)) ** 2


def _points_by_neighbours(heat, strict=False):
    """Each value against its upper, left and upper-left neighbours, from a padded copy
    (probabilities: a 0 outside the grid never wins)."""
    padded = torch.nn.functional.pad(heat, (1, 0, 1, 0))
    neighbours = [padded[..., :-1, 1:], padded[..., 1:, :-1], padded[..., :-1, :-1]]
    keep = torch.ones_like(heat, dtype=torch.bool)
    for neighbour in neighbours:
        keep &= (heat > neighbour) if strict else (heat >= neighbour)
    return torch.where(keep, heat, torch.zeros_like(heat))


def _points_3x3(heat):
    """A 3 x 3 window centred on the cell, the usual NMS neighbourhood."""
    return heat * (torch.nn.functional.max_pool2d(heat, 3, stride=1, padding=1) == heat)


def _matrix_nms_decay(masks, labels, scores, kernel, sigma, compensate=True, by_class=True):
    """Each mask's decay by a loop over the higher-scored masks, in the input order."""
    order = scores.argsort(descending=True).tolist()
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    union = flat.sum(1)[:, None] + flat.sum(1)[None, :] - inter
    iou = inter / union.clamp(min=1)

    def f(x):
        return torch.exp(-sigma * x**2) if kernel == "gaussian" else 1 - x

    def related(i, j):
        return not by_class or bool(labels[i] == labels[j])

    def comp(i, rank):  # how much the higher-scored masks of its class suppress mask i
        above = [iou[i, h] for h in order[:rank] if related(h, i)]
        return max(above, default=torch.tensor(0.0))

    decay = torch.ones_like(scores)
    for rank_j, j in enumerate(order):
        for rank_i, i in enumerate(order[:rank_j]):
            if related(i, j):
                divisor = f(comp(i, rank_i)) if compensate else 1.0
                decay[j] = torch.minimum(decay[j], f(iou[i, j]) / divisor)
    return decay


def _matrix_nms_loop(masks, labels, scores, kernel, sigma, **mistake):
    return scores * _matrix_nms_decay(masks, labels, scores, kernel, sigma, **mistake)


def _to_original_flip_then_crop(maps, geometry, flip=True, crop="centred"):
    """Resize to the input, mirror the whole input and crop the mirrored content box (or
    the top-left corner, or nothing), resize to the original; one map per batch entry."""

    def resize(x, size):
        return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)

    full = resize(maps[:, None].float(), geometry.input_size)  # (n, 1, H, W)
    x1, y1, x2, y2 = geometry.content_box
    h, w = geometry.content_size
    mirrored = flip and geometry.flipped
    if mirrored:
        full = full.flip(-1)  # the content box mirrors to columns W - x2 .. W - x1
        x1, x2 = geometry.input_size[1] - x2, geometry.input_size[1] - x1
    if crop == "centred":
        full = full[..., y1:y2, x1:x2]
    elif crop == "top-left":
        full = full[..., :h, :w]
    return resize(full, geometry.orig_size)[:, 0]


#: Exercise name -> a right implementation written differently from the library's.
ALTERNATIVES = {
    "mask_offsets": _offsets_loop,
    "object_levels": _levels_by_level,
    "center_region": _region_by_masks,
    "mask_target": _mask_target_by_pooling,
    "coord_features": _coords_by_arange,
    "focal_loss": _focal_by_log_sigmoids,
    "dice_loss": _dice_by_einsum,
    "learning_rate": _rate_by_factors,
    "points_nms": _points_by_neighbours,
    "matrix_nms": _matrix_nms_loop,
    "masks_to_original": _to_original_flip_then_crop,
}

#: (exercise, a learner's wrong function, the hint the check must name).
LEARNER_MISTAKES = [
    (
        "mask_offsets",
        lambda labels: _offsets_loop(labels, stop=-1),  # off by one: the last image left out
        "is the total missing?",
    ),
    (
        "mask_offsets",
        lambda labels: _offsets_loop(labels)[1:],  # the running total without its start
        "is the leading 0 missing?",
    ),
    (
        "object_levels",
        lambda b, r: _levels_by_level(b, r, upper_open=True),
        "is the range half-open, lo <= s < hi?",
    ),
    ("object_levels", lambda b, r: _levels_by_level(b, r, use_area=True), "is the area w h"),
    (
        "center_region",
        lambda *a: _region_by_masks(*a, box_centre=True),
        "is the centre the box centre?",
    ),
    (
        "center_region",
        lambda *a: _region_by_masks(*a, transposed=True),
        "are rows and columns swapped?",
    ),
    ("mask_target", _mask_target_by_slicing, "is it nearest-neighbour sampling?"),
    (
        "mask_target",
        lambda m, size: _mask_target_by_pooling(m, size, strict=True),
        "is the threshold coverage > 0.5?",
    ),
    ("coord_features", lambda f: _coords_by_arange(f, y_up=True), "does y grow upwards?"),
    (
        "coord_features",
        lambda f: _coords_by_arange(f, endpoint=False),  # arange(n) * 2 / n: one step short
        "is the last value missing",
    ),
    (
        "coord_features",
        lambda f: _coords_by_arange(f).flip(1),  # y stacked first
        "are x and y swapped?",
    ),
    (
        "focal_loss",
        lambda *a: _focal_by_log_sigmoids(*a, swap_alpha=True),
        "is alpha applied to the negatives",
    ),
    (
        "focal_loss",
        lambda *a: _focal_by_log_sigmoids(*a, modulate=False),
        "is the modulating factor (1 - p_t)^gamma missing?",
    ),
    (
        "dice_loss",
        lambda p, q: _dice_by_einsum(p, q, squares=False),
        "instead of sum p^2 + sum q^2",
    ),
    ("dice_loss", lambda p, q: _dice_by_einsum(p, q, one_minus=False), "the dice coefficient"),
    (
        "learning_rate",
        lambda *a: _rate_by_factors(*a, from_zero=True),
        "does the warm-up start at 0?",
    ),
    (
        "learning_rate",
        lambda s, *a: _rate_by_factors(s + 1, *a),  # steps counted from 1
        "are the steps counted from 1?",
    ),
    ("points_nms", _points_3x3, "is the window 3x3 around the cell?"),
    ("points_nms", lambda h: _points_by_neighbours(h, strict=True), "do ties lose?"),
    (
        "matrix_nms",
        lambda *a: _matrix_nms_loop(*a, compensate=False),
        "is the compensation f(comp_i) missing",
    ),
    (
        "matrix_nms",
        lambda *a: _matrix_nms_loop(*a, by_class=False),
        "do masks of other classes decay each other?",
    ),
    (
        "masks_to_original",
        lambda maps, g: _to_original_flip_then_crop(maps, g, flip=False),
        "is the flip undone?",
    ),
    (
        "masks_to_original",
        lambda maps, g: _to_original_flip_then_crop(maps, g, crop="top-left"),
        "is the content taken from the top-left corner?",
    ),
    (
        "masks_to_original",
        lambda maps, g: _to_original_flip_then_crop(maps, g, crop="none"),
        "is the padding cropped away?",
    ),
]


def test_every_exercise_has_an_alternative_and_a_learner_mistake():
    assert set(ALTERNATIVES) == set(exercises.EXERCISES)
    assert {name for name, _, _ in LEARNER_MISTAKES} == set(exercises.EXERCISES)


@pytest.mark.parametrize("name", list(ALTERNATIVES))
def test_a_right_function_written_another_way_passes(name):
    assert exercises.EXERCISES[name](ALTERNATIVES[name]) is None


@pytest.mark.parametrize(
    "name, wrong, hint",
    LEARNER_MISTAKES,
    ids=[f"{name}-{hint}" for name, _, hint in LEARNER_MISTAKES],
)
def test_a_learners_mistake_is_rejected_with_its_hint(name, wrong, hint):
    with pytest.raises(AssertionError) as error:
        exercises.EXERCISES[name](wrong)
    message = str(error.value)
    assert f"{name}: wrong on" in message and "common mistake" in message
    assert hint in message


# --- learners' functions that work in place ----------------------------------------------
def _in_place_matrix_nms(masks, labels, scores, kernel, sigma):
    """Matrix NMS, right, but decaying `scores` in place and returning them."""
    return scores.mul_(_matrix_nms_decay(masks, labels, scores, kernel, sigma))


def _in_place_focal_loss(logits, targets, alpha, gamma):
    """The focal loss, right, but with the sigmoid taken in place once -log p_t is known:
    `logits` end up holding the probabilities."""
    t = targets.float()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p = logits.sigmoid_()
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * (1 - p_t) ** gamma * ce


def test_a_right_function_that_works_in_place_is_accepted(capsys):
    """Matrix NMS that ends with ``scores.mul_(decay)`` and a focal loss that takes its
    sigmoid in place change their inputs; each function under test gets its own copy, so
    the expected values are those of the untouched inputs and both are accepted."""
    assert exercises.check_matrix_nms(_in_place_matrix_nms) is _in_place_matrix_nms
    assert exercises.check_focal_loss(_in_place_focal_loss) is _in_place_focal_loss
    out = capsys.readouterr().out
    assert "matrix_nms: correct on all 4 cases" in out
    assert "focal_loss: correct on all 3 cases" in out


def test_a_wrong_function_that_works_in_place_is_named_by_its_own_mistake(capsys):
    """A focal loss without (1 - p_t)^gamma whose sigmoid is also in place: the mistakes
    are computed on the untouched logits too, so its hint is the missing factor."""

    def without_modulation(logits, targets, alpha, gamma):
        return _in_place_focal_loss(logits, targets, alpha, 0.0)

    assert exercises.check_focal_loss(without_modulation) is focal_loss
    out = capsys.readouterr().out
    assert "wrong on hand-made logits" in out
    assert "is the modulating factor (1 - p_t)^gamma missing?" in out
