"""The machinery every exercise check shares: run the learner's function, compare, explain.

`run_check` runs the library's function and the learner's on the same `Case`s and
prints the first problem it finds: a wrong form (not a tensor, shape, dtype, NaN) with
the expected one, or a wrong value with where it differs and, when the learner's values
equal one of the exercise's known mistakes, that mistake's hint. Every function gets
its own deep copy of a case's arguments (`Case.arguments`): a learner's function that
works in place (``scores.mul_(decay)``) changes neither the expected values nor the
mistakes' results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Case:
    """One call of the function under test: its arguments and what they show."""

    description: str
    args: tuple

    def arguments(self) -> tuple:
        """A deep copy of `args` (tensors, arrays, lists, dicts), for one call.

        Each function under test gets its own, so that one that modifies its inputs in
        place cannot change what the next one is given.
        """
        return copy.deepcopy(self.args)


def run_check(
    name: str,
    fn: Callable,
    reference: Callable,
    cases: Sequence[Case],
    mistakes: dict[str, Callable],
    atol: float = 1e-5,
    form: str | None = None,
) -> Callable:
    """Run `reference` and `fn` on `cases`; print the verdict; return the function to use.

    The reference runs first, and each call gets its own copy of the case's arguments
    (`Case.arguments`), so that an in-place learner's function is judged on its result.

    `mistakes` maps a hint ("is alpha applied to the negatives?") to a wrong version of
    the reference; when the learner's result matches one (shape and values), its hint
    is printed. `form` says what the expected shape means ("(S, S), one entry per grid
    cell"); without it, a scalar or "the same shape as the input" is assumed.
    """
    for case in cases:
        expected = reference(*case.arguments())
        try:
            got = fn(*case.arguments())
        except NotImplementedError:
            print(f"{name}: not attempted yet: the library's version is used below")
            return reference
        except Exception as error:  # the learner's bug, reported rather than raised
            print(
                f"{name}: raised {type(error).__name__}: {error}\n  on {case.description}; "
                "the library's version is used below"
            )
            return reference
        problem = form_problem(got, expected, form)
        if problem is not None and isinstance(got, Tensor):
            problem += mistake_hint(got, case, mistakes, atol)
        elif problem is None and not torch.allclose(got.float(), expected.float(), atol=atol):
            problem = value_problem(got, expected) + mistake_hint(got, case, mistakes, atol)
        if problem is not None:
            print(f"{name}: wrong on {case.description}:\n  {problem}")
            print("  The library's version is used below; solutions/ has a reference solution.")
            return reference
    print(f"{name}: correct on all {len(cases)} cases (hand-made and seeded random ones)")
    return fn


def form_problem(got: object, expected: Tensor, form: str | None = None) -> str | None:
    """A message when `got` is not a tensor of `expected`'s shape and kind of dtype.

    `form` says what the expected shape means; by default a scalar or the input's shape.
    """
    if form is None:
        form = (
            "a scalar"
            if expected.dim() == 0
            else "the same shape as the input, one value per entry"
        )
    if not isinstance(got, Tensor):
        return f"expected a torch.Tensor of shape {tuple(expected.shape)}, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)} ({form}), got {tuple(got.shape)}"
    if got.is_floating_point() != expected.is_floating_point():
        return f"expected dtype {expected.dtype}, got {got.dtype}"
    if not torch.isfinite(got.float()).all() and torch.isfinite(expected.float()).all():
        return "the result holds NaN or inf where the expected one is finite"
    return None


def value_problem(got: Tensor, expected: Tensor) -> str:
    """Where the values differ most, with both values and both sums."""
    difference = (got.float() - expected.float()).abs()
    where = tuple(int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
    return (
        f"at index {where}: {got.float()[where].item():.4f}, expected "
        f"{expected.float()[where].item():.4f} (sum {got.float().sum().item():.4f}, expected "
        f"{expected.float().sum().item():.4f})"
    )


def mistake_hint(got: Tensor, case: Case, mistakes: dict[str, Callable], atol: float) -> str:
    """The hint of the first mistake whose result on `case` equals `got`, else ""."""
    for hint, wrong in mistakes.items():
        candidate = wrong(*case.arguments())
        if candidate.shape == got.shape and torch.allclose(
            got.float(), candidate.float(), atol=atol
        ):
            return f"\n  Your values match a common mistake: {hint}"
    return ""
