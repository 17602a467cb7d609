"""The check of notebook 04's exercise, the learning rate of one step: it passes the
reference solution and right functions written other ways, names each common mistake
(written here as a learner would, not from the check's own versions), reports stubs,
crashes and non-numbers, and its reference is the rate the optimiser really gets."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from solo_lib import exercises
from solo_lib.config import SOLOConfig
from solo_lib.course import learning_rate_schedule
from solo_lib.exercises.schedule import MISTAKES, learning_rate_at
from solo_lib.paths import REPO_ROOT


def _solution():
    """solutions/schedule.py's `my_learning_rate`, loaded by path (a plain ``import
    schedule`` could find another module of that name)."""
    path = REPO_ROOT / "solutions" / "schedule.py"
    spec = importlib.util.spec_from_file_location("solution_schedule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.my_learning_rate


def test_the_reference_solution_passes_and_is_used(capsys):
    solution = _solution()
    assert exercises.check_learning_rate(solution) is solution
    assert "learning_rate: correct on all 8 cases" in capsys.readouterr().out


def test_the_reference_is_the_rate_the_optimiser_gets():
    """Oracle: `learning_rate_schedule` steps LitSOLO's real optimiser and LambdaLR, as
    Lightning does (tests/test_course.py checks that against a Trainer); the check's
    reference, and the solution, give its rate at every step of a 3-epoch run of 30
    steps an epoch (50 warm-up steps: the warm-up, its end and the cosine)."""
    cfg = SOLOConfig.cpu().replace(max_epochs=3, time_budget_min=None, warmup_iters=50)
    _, rates = learning_rate_schedule(cfg, steps_per_epoch=30)
    lr, total = cfg.learning_rate(cfg.batch_size), len(rates)
    assert total == 90 and cfg.warmup_iters == 50
    for fn in (learning_rate_at, _solution()):
        mine = [fn(step, total, lr, cfg.warmup_iters, cfg.warmup_ratio) for step in range(total)]
        np.testing.assert_allclose(mine, rates, rtol=1e-12, atol=1e-15)


def test_the_hand_made_run_by_hand():
    """lr 0.002, 50 warm-up steps from 0.01, 400 steps: step 0 is 0.01 x 0.002 = 2e-5;
    step 25 is (0.01 + 0.99 / 2) = 0.505 of the warm-up times the cosine at 1/16 of the
    run; step 200 is 1 x (1 + cos(pi / 2)) / 2 = 1/2 of lr; step 400 is 0."""
    run = (400, 0.002, 50, 0.01)
    assert learning_rate_at(0, *run) == pytest.approx(2e-5)
    assert learning_rate_at(25, *run) == pytest.approx(
        0.002 * 0.505 * (1 + math.cos(math.pi / 16)) / 2
    )
    assert learning_rate_at(50, *run) == pytest.approx(0.002 * (1 + math.cos(math.pi / 8)) / 2)
    assert learning_rate_at(200, *run) == pytest.approx(0.001)
    assert learning_rate_at(400, *run) == pytest.approx(0.0, abs=1e-18)
    assert learning_rate_at(0, 100, 0.01, 0, 0.1) == pytest.approx(0.01)  # no warm-up


# --- right functions written other ways ----------------------------------------------------
def _rate_torch_float32(step, total_steps, lr, warmup_iters, warmup_ratio):
    """A float32 tensor of one element: accepted, though its cosine near 0 is coarse."""
    t = torch.tensor(step / total_steps, dtype=torch.float32)
    warmup = 1.0
    if step < warmup_iters:
        warmup = warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    return lr * warmup * (1 + torch.cos(torch.pi * t)) / 2


def _rate_numpy_interp(step, total_steps, lr, warmup_iters, warmup_ratio):
    """The warm-up by np.interp (a numpy float comes back)."""
    warmup = np.interp(step, [0, warmup_iters], [warmup_ratio, 1.0]) if warmup_iters else 1.0
    return lr * warmup * np.cos(np.pi * step / total_steps / 2) ** 2  # (1 + cos x) / 2


@pytest.mark.parametrize("right", [_rate_torch_float32, _rate_numpy_interp])
def test_a_right_function_written_another_way_passes(right, capsys):
    assert exercises.check_learning_rate(right) is right
    assert "correct on all 8 cases" in capsys.readouterr().out


# --- learners' mistakes -------------------------------------------------------------------
def _cos_factor(step, total):
    return (1 + math.cos(math.pi * step / total)) / 2


def _warmup_factor(step, warmup, ratio):
    return ratio + (1 - ratio) * step / warmup if step < warmup else 1.0


LEARNER_MISTAKES = [
    (
        lambda s, T, lr, W, r: lr * (s / W if s < W else 1.0) * _cos_factor(s, T),
        "does the warm-up start at 0?",
    ),
    (
        lambda s, T, lr, W, r: _warmup_factor(s, W, r) * _cos_factor(s, T),
        "is it the factor alone?",
    ),
    (
        lambda s, T, lr, W, r: lr * (r + (1 - r) * s / W if W else 1.0) * _cos_factor(s, T),
        "is the warm-up applied after warmup_iters too?",
    ),
    (
        lambda s, T, lr, W, r: lr * (r + s / W if s < W else 1.0) * _cos_factor(s, T),
        "does the warm-up factor overshoot 1?",
    ),
    (
        lambda s, T, lr, W, r: (
            lr * (min(1.0, r + (1 - r) * s / (W - 1)) if W else 1.0) * _cos_factor(s, T)
        ),
        "does the warm-up reach lr one step early",
    ),
    (
        lambda s, T, lr, W, r: (
            lr
            * min(1.0, r + (1 - r) * s / max(W, 1))  # max: no division by 0
            * _cos_factor(s, T)
        ),
        "does a run without warm-up (warmup_iters 0) still start at warmup_ratio x lr?",
    ),
    (
        lambda s, T, lr, W, r: lr * _warmup_factor(s + 1, W, r) * _cos_factor(min(s + 1, T), T),
        "are the steps counted from 1?",
    ),
    (
        lambda s, T, lr, W, r: lr * _warmup_factor(s, W, r) * _cos_factor(min(s, T - 1), T - 1),
        "does the cosine reach 0 one step early",
    ),
    (
        lambda s, T, lr, W, r: lr * _warmup_factor(s, W, r) * _cos_factor(max(s - W, 0), T - W),
        "does the cosine start after the warm-up?",
    ),
    (
        lambda s, T, lr, W, r: lr * (_warmup_factor(s, W, r) if s < W else _cos_factor(s, T)),
        "is the warm-up used instead of the cosine",
    ),
    (
        lambda s, T, lr, W, r: lr * _warmup_factor(s, W, r) * math.cos(math.pi * s / T),
        "does the cosine run to -lr?",
    ),
]


def test_every_named_mistake_has_a_learners_version():
    named = {hint for _, hint in LEARNER_MISTAKES}
    assert len(named) == len(MISTAKES)
    assert all(any(hint in full for full in MISTAKES) for hint in named)


@pytest.mark.parametrize("wrong, hint", LEARNER_MISTAKES, ids=[h for _, h in LEARNER_MISTAKES])
def test_a_learners_mistake_is_rejected_with_its_hint(wrong, hint, capsys):
    assert exercises.check_learning_rate(wrong) is learning_rate_at
    out = capsys.readouterr().out
    assert "learning_rate: wrong on" in out and "Your values match a common mistake" in out
    assert hint in out
    assert out.count("common mistake") == 1


def test_the_first_step_names_the_step_and_both_rates(capsys):
    """A warm-up from 0: step 0 gets 0 instead of 0.01 x 0.002 = 2e-05."""
    exercises.check_learning_rate(LEARNER_MISTAKES[0][0])
    out = capsys.readouterr().out
    assert "wrong on step 0, the first step" in out
    assert "at step 0: 0 (0 x lr), expected 2e-05 (0.01 x lr)" in out


# --- stubs, crashes, wrong forms -----------------------------------------------------------
def test_a_stub_is_not_attempted_and_the_library_is_used(capsys):
    def stub(step, total_steps, lr, warmup_iters, warmup_ratio):
        raise NotImplementedError

    assert exercises.check_learning_rate(stub) is learning_rate_at
    out = capsys.readouterr().out
    assert "learning_rate: not attempted yet: the library's version is used below" in out


def test_a_division_by_a_zero_warmup_is_reported_with_the_step_and_case(capsys):
    """``min(1, step / warmup_iters)`` divides by 0 in the run without warm-up."""

    def divides(step, total_steps, lr, warmup_iters, warmup_ratio):
        warmup = warmup_ratio + (1 - warmup_ratio) * min(1.0, step / warmup_iters)
        return lr * warmup * _cos_factor(step, total_steps)

    assert exercises.check_learning_rate(divides) is learning_rate_at
    out = capsys.readouterr().out
    assert "raised ZeroDivisionError" in out
    assert "at step 0 of steps 0, 1, 50 and 99 of a run without warm-up" in out


@pytest.mark.parametrize(
    "result, form",
    [
        (lambda: torch.zeros(2), "got Tensor of shape (2,)"),
        (lambda: None, "got NoneType"),
        (lambda: [0.1], "got list"),
    ],
)
def test_a_result_that_is_not_a_number_is_a_form_error(result, form, capsys):
    assert exercises.check_learning_rate(lambda *args: result()) is learning_rate_at
    out = capsys.readouterr().out
    assert "at step 0: expected a number (the rate), " + form in out


def test_a_nan_rate_is_named(capsys):
    assert exercises.check_learning_rate(lambda *args: float("nan")) is learning_rate_at
    assert "at step 0: the rate is nan, expected a finite number" in capsys.readouterr().out


def test_the_contract_lists_the_exercise_and_its_reference():
    assert exercises.reference("learning_rate") is learning_rate_at
    assert exercises.EXERCISES["learning_rate"](_solution()) is None
    with pytest.raises(AssertionError, match="does the cosine start after the warm-up"):
        exercises.EXERCISES["learning_rate"](LEARNER_MISTAKES[8][0])
