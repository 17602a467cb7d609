"""Exercise of notebook 04: the learning rate of one optimiser step (4.4).

The learner writes the rate of the `cpu` preset's schedule at step `step`: `lr` times
`LRSchedule`'s factor, a linear warm-up from `warmup_ratio` to 1 over `warmup_iters`
steps times a cosine from 1 at step 0 to 0 at step `total_steps`. The rate is a number,
not a tensor, and most of a run's rates are small (0.002 at most for the preset), so
this check compares numbers itself, relative to `lr`, and prints them with their
factor of `lr`; its verdicts read as `run_check`'s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from solo_lib.exercises.check import Case
from solo_lib.schedule import LRSchedule

#: A rate is right when it is within REL_TOL of the expected one, or within ABS_TOL x lr
#: (a float32 cosine near 0 is only that exact). The off-by-one mistakes differ by more.
REL_TOL = 1e-4
ABS_TOL = 1e-6


def learning_rate_at(
    step: int, total_steps: int, lr: float, warmup_iters: int, warmup_ratio: float
) -> float:
    """The rate of optimiser step `step` (0-based) of the cosine schedule: what
    `LambdaLR` sets from `LRSchedule` for a run of `total_steps` steps at peak rate `lr`."""
    schedule = LRSchedule(
        total_steps, kind="cosine", warmup_iters=warmup_iters, warmup_ratio=warmup_ratio
    )
    return lr * schedule(step)


# --- the cases --------------------------------------------------------------------------
#: The hand-made run: the cpu preset's rate (0.008 x batch 4 / 16), its 50 warm-up steps
#: from 1 %, and 400 steps in all.
_RUN = (400, 0.002, 50, 0.01)
_RUN_TEXT = "lr 0.002, warmup_iters 50, warmup_ratio 0.01, total_steps 400"


def _schedule_cases() -> list[Case]:
    """Hand-made steps of one run (the first, the warm-up and its end, the middle, the
    end), a run without warm-up, and seeded random runs. A case's args: the steps, then
    (total_steps, lr, warmup_iters, warmup_ratio)."""
    cases = [
        Case(
            f"step 0, the first step ({_RUN_TEXT}): the rate is warmup_ratio x lr = 2e-05",
            ((0,), *_RUN),
        ),
        Case(
            f"steps 25, 49, 50 and 51, through the warm-up and past its end ({_RUN_TEXT}): "
            "the warm-up factor reaches 1 at step warmup_iters = 50",
            ((25, 49, 50, 51), *_RUN),
        ),
        Case(
            f"step 200, the middle of the run ({_RUN_TEXT}): the cosine factor is 1/2",
            ((200,), *_RUN),
        ),
        Case(
            f"steps 399 and 400 ({_RUN_TEXT}): step 399 is the last step taken, and the "
            "cosine reaches 0 at step total_steps = 400",
            ((399, 400), *_RUN),
        ),
        Case(
            "steps 0, 1, 50 and 99 of a run without warm-up (lr 0.01, warmup_iters 0, "
            "warmup_ratio 0.1, total_steps 100): the warm-up factor is 1 from step 0",
            ((0, 1, 50, 99), 100, 0.01, 0, 0.1),
        ),
    ]
    generator = random.Random(4)
    for _ in range(3):
        total = generator.randint(20, 2000)
        warmup = generator.randint(2, total // 3)
        lr = round(10 ** generator.uniform(-4, -1), 6)
        ratio = round(generator.uniform(0.001, 0.5), 4)
        steps = sorted(
            {0, warmup - 1, warmup, total - 1, *(generator.randrange(total) for _ in range(5))}
        )
        cases.append(
            Case(
                f"steps {steps} of a seeded random run (lr {lr}, warmup_iters {warmup}, "
                f"warmup_ratio {ratio}, total_steps {total})",
                (tuple(steps), total, lr, warmup, ratio),
            )
        )
    return cases


# --- the common mistakes ----------------------------------------------------------------
def _warmup(step: int, warmup_iters: int, warmup_ratio: float) -> float:
    if step < warmup_iters:
        return warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    return 1.0


def _cosine(step: int, total_steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))


def _warmup_from_zero(step, total, lr, warmup, ratio):
    factor = step / warmup if step < warmup else 1.0
    return lr * factor * _cosine(step, total)


def _factor_only(step, total, lr, warmup, ratio):
    return learning_rate_at(step, total, 1.0, warmup, ratio)


def _warmup_never_ends(step, total, lr, warmup, ratio):
    factor = ratio + (1 - ratio) * step / warmup if warmup > 0 else 1.0
    return lr * factor * _cosine(step, total)


def _warmup_overshoots(step, total, lr, warmup, ratio):
    factor = ratio + step / warmup if step < warmup else 1.0
    return lr * factor * _cosine(step, total)


def _warmup_one_step_short(step, total, lr, warmup, ratio):
    factor = min(ratio + (1 - ratio) * step / (warmup - 1), 1.0) if warmup > 0 else 1.0
    return lr * factor * _cosine(step, total)


def _warmup_of_one_step_without_warmup(step, total, lr, warmup, ratio):
    return learning_rate_at(step, total, lr, max(warmup, 1), ratio)


def _counted_from_one(step, total, lr, warmup, ratio):
    return learning_rate_at(step + 1, total, lr, warmup, ratio)


def _cosine_one_step_short(step, total, lr, warmup, ratio):
    return lr * _warmup(step, warmup, ratio) * _cosine(step, total - 1)


def _cosine_after_warmup(step, total, lr, warmup, ratio):
    return lr * _warmup(step, warmup, ratio) * _cosine(max(step - warmup, 0), total - warmup)


def _warmup_instead_of_cosine(step, total, lr, warmup, ratio):
    return lr * (_warmup(step, warmup, ratio) if step < warmup else _cosine(step, total))


def _cosine_to_minus_one(step, total, lr, warmup, ratio):
    return lr * _warmup(step, warmup, ratio) * math.cos(math.pi * min(step / total, 1.0))


#: Hint -> a wrong rate (step, total_steps, lr, warmup_iters, warmup_ratio) -> float.
MISTAKES: dict[str, Callable[[int, int, float, int, float], float]] = {
    "does the warm-up start at 0? At step 0 the rate is warmup_ratio x lr, and it rises "
    "linearly to lr at step warmup_iters": _warmup_from_zero,
    "is it the factor alone? The rate is lr times the warm-up and cosine factors": _factor_only,
    "is the warm-up applied after warmup_iters too? Its factor reaches 1 at step "
    "warmup_iters and stays 1: it applies only while step < warmup_iters": _warmup_never_ends,
    "does the warm-up factor overshoot 1? It climbs from warmup_ratio to 1: warmup_ratio + "
    "(1 - warmup_ratio) x step / warmup_iters": _warmup_overshoots,
    "does the warm-up reach lr one step early, at step warmup_iters - 1? Divide by "
    "warmup_iters: the factor is 1 first at step warmup_iters": _warmup_one_step_short,
    "does a run without warm-up (warmup_iters 0) still start at warmup_ratio x lr? With "
    "warmup_iters 0 the warm-up factor is 1 from step 0 (is warmup_iters replaced by 1 to "
    "avoid dividing by 0?)": _warmup_of_one_step_without_warmup,
    "are the steps counted from 1? The first step is step 0, where the rate is "
    "warmup_ratio x lr": _counted_from_one,
    "does the cosine reach 0 one step early, at step total_steps - 1? It reaches 0 at "
    "step total_steps: cos(pi x step / total_steps); the last step taken, total_steps - 1, "
    "still has a small rate": _cosine_one_step_short,
    "does the cosine start after the warm-up? The course's cosine runs over the whole run, "
    "cos(pi x step / total_steps) from step 0, and the warm-up factor multiplies it": (
        _cosine_after_warmup
    ),
    "is the warm-up used instead of the cosine during the first warmup_iters steps? The "
    "two factors multiply: the cosine already decays a little during the warm-up": (
        _warmup_instead_of_cosine
    ),
    "does the cosine run to -lr? cos(pi x step / total_steps) goes from 1 to -1; the "
    "factor is (1 + cos(pi x step / total_steps)) / 2, from 1 to 0": _cosine_to_minus_one,
}


# --- the check --------------------------------------------------------------------------
def _close(got: float, expected: float, lr: float) -> bool:
    return abs(got - expected) <= ABS_TOL * lr + REL_TOL * abs(expected)


def _as_number(value: object) -> float | None:
    """A Python or numpy number, or a one-element tensor, as a float; else None."""
    if isinstance(value, bool):
        return None
    try:
        if hasattr(value, "numel") and value.numel() != 1:
            return None
        return float(value)
    except (TypeError, ValueError):
        return None


def _form(value: object) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    return type(value).__name__


def _mistake_hint(rates: Sequence[float], steps: Sequence[int], run: tuple) -> str:
    """The hint of the first mistake whose rates at `steps` equal `rates`, else ""."""
    lr = run[1]
    for hint, wrong in MISTAKES.items():
        try:
            candidate = [wrong(step, *run) for step in steps]
        except ZeroDivisionError:  # the mistake does not exist for this run
            continue
        if all(_close(got, other, lr) for got, other in zip(rates, candidate, strict=True)):
            return f"\n  Your values match a common mistake: {hint}"
    return ""


def check_learning_rate(fn: Callable[[int, int, float, int, float], float]) -> Callable:
    """Check ``fn(step, total_steps, lr, warmup_iters, warmup_ratio)``: the learning rate
    of optimiser step `step` (0-based) of the cosine schedule, a number.

    rate = lr x warm-up x cosine; the warm-up factor is warmup_ratio + (1 - warmup_ratio)
    x step / warmup_iters while step < warmup_iters, then 1; the cosine factor is
    (1 + cos(pi x step / total_steps)) / 2, from 1 at step 0 to 0 at step total_steps.
    Returns `fn` when it is right at every step of every case, else `learning_rate_at`.
    """
    name = "learning_rate"
    cases = _schedule_cases()
    for case in cases:
        steps, run = case.args[0], case.args[1:]
        lr = run[1]
        expected = [learning_rate_at(step, *run) for step in steps]
        rates, problem = [], None
        for step in steps:
            try:
                got = fn(step, *run)
            except NotImplementedError:
                print(f"{name}: not attempted yet: the library's version is used below")
                return learning_rate_at
            except Exception as error:  # the learner's bug, reported rather than raised
                print(
                    f"{name}: raised {type(error).__name__}: {error}\n  at step {step} of "
                    f"{case.description}; the library's version is used below"
                )
                return learning_rate_at
            rate = _as_number(got)
            if rate is None:
                problem = f"at step {step}: expected a number (the rate), got {_form(got)}"
                break
            if not math.isfinite(rate):
                problem = f"at step {step}: the rate is {rate}, expected a finite number"
                break
            rates.append(rate)
        if problem is None:
            wrong = [i for i, rate in enumerate(rates) if not _close(rate, expected[i], lr)]
            if wrong:
                i = wrong[0]
                problem = (
                    f"at step {steps[i]}: {rates[i]:.6g} ({rates[i] / lr:.6g} x lr), expected "
                    f"{expected[i]:.6g} ({expected[i] / lr:.6g} x lr)"
                ) + _mistake_hint(rates, steps, run)
        if problem is not None:
            print(f"{name}: wrong on {case.description}:\n  {problem}")
            print("  The library's version is used below; solutions/ has a reference solution.")
            return learning_rate_at
    print(f"{name}: correct on all {len(cases)} cases (hand-made and seeded random ones)")
    return fn
