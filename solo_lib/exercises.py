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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from solo_lib.losses import dice_loss, focal_loss
from solo_lib.postprocess import mask_iou, matrix_nms, points_nms


@dataclass(frozen=True)
class Case:
    """One call of the function under test: its arguments and what they show."""

    description: str
    args: tuple


def _check(
    name: str,
    fn: Callable,
    reference: Callable,
    cases: Sequence[Case],
    mistakes: dict[str, Callable],
    atol: float = 1e-5,
) -> Callable:
    """Run `fn` and `reference` on `cases`; print the verdict; return the function to use.

    `mistakes` maps a hint ("is alpha applied to the negatives?") to a wrong version of
    the reference; when the learner's values match one, its hint is printed.
    """
    for case in cases:
        try:
            got = fn(*case.args)
        except NotImplementedError:
            print(f"{name}: not attempted yet: the library's version is used below")
            return reference
        except Exception as error:  # the learner's bug, reported rather than raised
            print(
                f"{name}: raised {type(error).__name__}: {error}\n  on {case.description}; "
                "the library's version is used below"
            )
            return reference
        expected = reference(*case.args)
        problem = _form_problem(got, expected)
        if problem is None and not torch.allclose(got.float(), expected.float(), atol=atol):
            problem = _value_problem(got, expected, case, mistakes, atol)
        if problem is not None:
            print(f"{name}: wrong on {case.description}:\n  {problem}")
            print("  The library's version is used below; solutions/ has a reference solution.")
            return reference
    print(f"{name}: correct on all {len(cases)} cases (hand-made and seeded random ones)")
    return fn


def _form_problem(got: object, expected: Tensor) -> str | None:
    """A message when `got` is not a tensor of `expected`'s shape and kind of dtype."""
    if not isinstance(got, Tensor):
        return f"expected a torch.Tensor of shape {tuple(expected.shape)}, got {type(got).__name__}"
    if got.shape != expected.shape:
        return (
            f"expected shape {tuple(expected.shape)} ({_shape_hint(expected)}), "
            f"got {tuple(got.shape)}"
        )
    if got.is_floating_point() != expected.is_floating_point():
        return f"expected dtype {expected.dtype}, got {got.dtype}"
    if not torch.isfinite(got.float()).all() and torch.isfinite(expected.float()).all():
        return "the result holds NaN or inf where the expected one is finite"
    return None


def _shape_hint(expected: Tensor) -> str:
    return "a scalar" if expected.dim() == 0 else "the same shape as the input, one value per entry"


def _value_problem(
    got: Tensor, expected: Tensor, case: Case, mistakes: dict[str, Callable], atol: float
) -> str:
    """Where the values differ, and the likely mistake when the values match one."""
    difference = (got.float() - expected.float()).abs()
    where = tuple(int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
    message = (
        f"at index {where}: {got.float()[where].item():.4f}, expected "
        f"{expected.float()[where].item():.4f} (sum {got.float().sum().item():.4f}, expected "
        f"{expected.float().sum().item():.4f})"
    )
    for hint, wrong in mistakes.items():
        candidate = wrong(*case.args)
        if candidate.shape == got.shape and torch.allclose(
            got.float(), candidate.float(), atol=atol
        ):
            return f"{message}\n  Your values match a common mistake: {hint}"
    return message


# --- focal loss (notebook 03) ------------------------------------------------------------
def _focal_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    hand = Case(
        "hand-made logits [[2, -1, 0], [-3, 0.5, 4]] with one positive per row (alpha "
        "0.25, gamma 2)",
        (
            torch.tensor([[2.0, -1.0, 0.0], [-3.0, 0.5, 4.0]]),
            torch.tensor([[1, 0, 0], [0, 0, 1]]),
            0.25,
            2.0,
        ),
    )
    random = Case(
        "seeded random logits (64, 3), 10 % positives (alpha 0.25, gamma 2)",
        (
            3 * torch.randn(64, 3, generator=generator),
            (torch.rand(64, 3, generator=generator) < 0.1).long(),
            0.25,
            2.0,
        ),
    )
    other = Case(
        "seeded random logits (16, 2), alpha 0.5, gamma 0 (plain cross-entropy / 2)",
        (
            torch.randn(16, 2, generator=generator),
            (torch.rand(16, 2, generator=generator) < 0.5).long(),
            0.5,
            0.0,
        ),
    )
    return [hand, random, other]


def _focal_swapped_alpha(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    return focal_loss(logits, targets, 1 - alpha, gamma)


def _focal_without_modulation(
    logits: Tensor, targets: Tensor, alpha: float, gamma: float
) -> Tensor:
    return focal_loss(logits, targets, alpha, 0.0)


def _focal_without_alpha(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    return focal_loss(logits, targets, 0.5, gamma) * 2


def _focal_on_probabilities(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    return focal_loss(logits.sigmoid(), targets, alpha, gamma)


def check_focal_loss(fn: Callable[[Tensor, Tensor, float, float], Tensor]) -> Callable:
    """Check ``fn(logits, targets_onehot, alpha, gamma)``: the focal loss per entry.

    logits (N, C) float; targets_onehot (N, C) 0/1; returns (N, C), the loss of every
    entry, not summed: FL = -alpha_t (1 - p_t)^gamma log p_t with p = sigmoid(logit).
    """
    return _check(
        "focal_loss",
        fn,
        focal_loss,
        _focal_cases(),
        {
            "is alpha applied to the negatives (alpha and 1 - alpha swapped)?": _focal_swapped_alpha,
            "is the modulating factor (1 - p_t)^gamma missing?": _focal_without_modulation,
            "is alpha_t missing (every entry weighted 1)?": _focal_without_alpha,
            "is the sigmoid applied twice (the inputs are logits, not probabilities)?": (
                _focal_on_probabilities
            ),
        },
    )


# --- dice loss (notebook 03) -------------------------------------------------------------
def _dice_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(1)
    square = torch.zeros(1, 4, 4)
    square[0, 1:3, 1:3] = 1
    half = square.clone()
    half[0, 1:3, 1] = 0.5
    hand = Case(
        "a hand-made 2x2 square target and a prediction at 1 and 0.5 on it (dice 1 - 2 * 3 / "
        "(2.5 + 4))",
        (half, square),
    )
    random = Case(
        "seeded random predictions and targets (5, 8, 8)",
        (
            torch.rand(5, 8, 8, generator=generator),
            (torch.rand(5, 8, 8, generator=generator) < 0.3).float(),
        ),
    )
    empty = Case(
        "an all-zero prediction of an all-zero target (eps keeps it finite)",
        (torch.zeros(2, 3, 3), torch.zeros(2, 3, 3)),
    )
    return [hand, random, empty]


def _dice_plain_denominator(p: Tensor, q: Tensor) -> Tensor:
    p, q = p.flatten(1), q.flatten(1).float()
    return 1 - 2 * (p * q).sum(1) / (p.sum(1) + q.sum(1) + 1e-3)


def _dice_coefficient(p: Tensor, q: Tensor) -> Tensor:
    return 1 - dice_loss(p, q)


def _dice_over_batch(p: Tensor, q: Tensor) -> Tensor:
    return dice_loss(p.reshape(1, -1, 1), q.reshape(1, -1, 1).float()).expand(p.shape[0])


def check_dice_loss(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable:
    """Check ``fn(pred_probs, targets)``: the dice loss of each mask.

    pred_probs (P, h, w) probabilities; targets (P, h, w) 0/1; returns (P,):
    1 - 2 sum(p q) / (sum p^2 + sum q^2 + eps), eps = 1e-3, sums over each mask's pixels.
    """
    return _check(
        "dice_loss",
        fn,
        dice_loss,
        _dice_cases(),
        {
            "is the denominator sum p + sum q instead of sum p^2 + sum q^2 (SOLO squares them)?": (
                _dice_plain_denominator
            ),
            "is it the dice coefficient (1 for a perfect mask) instead of 1 minus it?": (
                _dice_coefficient
            ),
            "are the sums taken over the whole batch instead of over each mask?": _dice_over_batch,
        },
        atol=1e-4,
    )


# --- points NMS (notebook 05) ------------------------------------------------------------
def _points_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(2)
    blob = torch.tensor([[0.1, 0.2, 0.1], [0.2, 0.9, 0.3], [0.1, 0.8, 0.7]])[None, None]
    ties = torch.tensor([[0.5, 0.5], [0.5, 0.2]])[None, None]
    return [
        Case("a hand-made 3x3 blob peaking at (1, 1)", (blob,)),
        Case("a hand-made 2x2 grid with three equal values (ties survive)", (ties,)),
        Case("seeded random heat (2, 3, 8, 8)", (torch.rand(2, 3, 8, 8, generator=generator),)),
    ]


def _points_nms_3x3(heat: Tensor) -> Tensor:
    return heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)


def _points_nms_strict(heat: Tensor) -> Tensor:
    window = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[:, :, :-1, :-1]
    neighbours = torch.stack(
        [
            F.pad(heat, (1, 0, 0, 0))[:, :, :, :-1],
            F.pad(heat, (0, 0, 1, 0))[:, :, :-1, :],
            F.pad(heat, (1, 0, 1, 0))[:, :, :-1, :-1],
        ]
    ).amax(0)
    return heat * (window == heat) * (heat > neighbours)


def check_points_nms(fn: Callable[[Tensor], Tensor]) -> Callable:
    """Check ``fn(heat)``: SOLO's points NMS on category probabilities (B, C, S, S).

    A value survives when it is the maximum of its 2x2 window, cells (i-1..i, j-1..j)
    (a max pool with kernel 2, stride 1, padding 1, top-left S x S part); the others
    become 0. Returns (B, C, S, S).
    """
    return _check(
        "points_nms",
        fn,
        points_nms,
        _points_cases(),
        {
            "is the window 3x3 around the cell? SOLO's is 2x2, up and to the left": (
                _points_nms_3x3
            ),
            "do ties lose? A value equal to its window's maximum survives": _points_nms_strict,
        },
    )


# --- Matrix NMS (notebook 05) ------------------------------------------------------------
def _matrix_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(3)
    toy = torch.zeros(3, 48, 48, dtype=torch.bool)
    toy[0, 6:38, 6:26] = True  # the best mask
    toy[1, 11:43, 7:27] = True  # a duplicate of it, same class
    toy[2, 16:44, 18:44] = True  # another class over both
    chain = torch.zeros(3, 8, 8, dtype=torch.bool)
    chain[0, :, 2:6] = True  # score 0.5: IoU 0.6 with mask 2, 0.33 with mask 1
    chain[1, :, 0:4] = True  # score 0.9, the best
    chain[2, :, 1:5] = True  # score 0.6: IoU 0.6 with mask 1, so comp = 0.6
    boxes = torch.randint(0, 20, (12, 2), generator=generator)
    random = torch.zeros(12, 32, 32, dtype=torch.bool)
    for k, (row, col) in enumerate(boxes.tolist()):
        random[k, row : row + 12, col : col + 12] = True
    return [
        Case(
            "notebook 05's toy: a person, its duplicate, an animal (gaussian, sigma 2)",
            (toy, torch.tensor([2, 2, 3]), torch.tensor([0.9, 0.8, 0.7]), "gaussian", 2.0),
        ),
        Case(
            "a chain of three same-class masks, scores not sorted (linear kernel): mask 0's "
            "decay by mask 2 (1 - 0.6) is compensated by mask 2's own (1 - 0.6), so mask 1 "
            "decays it most: 0.5 x (1 - 0.33) = 0.333",
            (chain, torch.tensor([1, 1, 1]), torch.tensor([0.5, 0.9, 0.6]), "linear", 2.0),
        ),
        Case(
            "seeded random squares, two classes, random scores (gaussian, sigma 2)",
            (
                random,
                torch.randint(1, 3, (12,), generator=generator),
                torch.rand(12, generator=generator),
                "gaussian",
                2.0,
            ),
        ),
    ]


def _matrix_nms_decays(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str,
    sigma: float,
    compensate: bool = True,
    across_classes: bool = False,
    sort: bool = True,
) -> Tensor:
    """Matrix NMS written out, with switches for the usual mistakes (the reference when
    all are off equals `matrix_nms`, tests check it)."""
    order = scores.argsort(descending=True, stable=True) if sort else torch.arange(len(scores))
    iou = mask_iou(masks)[order][:, order]
    if not across_classes:
        iou = iou * (labels[order][:, None] == labels[order][None, :])
    iou = iou.triu(diagonal=1)
    comp = iou.max(dim=0).values[:, None] if compensate else torch.zeros(len(scores), 1)
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (iou.square() - comp.square()))
    else:
        decay = (1 - iou) / (1 - comp).clamp(min=1e-6)
    out = torch.empty_like(scores)
    out[order] = scores[order] * decay.min(dim=0).values
    return out


def check_matrix_nms(fn: Callable[[Tensor, Tensor, Tensor, str, float], Tensor]) -> Callable:
    """Check ``fn(masks, labels, scores, kernel, sigma)``: Matrix NMS's decayed scores.

    masks (N, H, W) bool, labels (N,), scores (N,) in any order; kernel "gaussian"
    (f(x) = exp(-sigma x^2)) or "linear" (f(x) = 1 - x). Returns (N,), in the input
    order: s_j * min over higher-scored i of the same class of f(iou_ij) / f(comp_i).
    """
    return _check(
        "matrix_nms",
        fn,
        matrix_nms,
        _matrix_cases(),
        {
            "is the compensation f(comp_i) missing (each decay divided by it)?": (
                lambda *a: _matrix_nms_decays(*a, compensate=False)
            ),
            "do masks of other classes decay each other? Only the same class should": (
                lambda *a: _matrix_nms_decays(*a, across_classes=True)
            ),
            "are the masks taken in their given order instead of sorted by score?": (
                lambda *a: _matrix_nms_decays(*a, sort=False)
            ),
        },
    )
