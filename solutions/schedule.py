"""Reference solution of notebook 04's exercise: the learning rate of one optimiser step."""

import math


def my_learning_rate(
    step: int, total_steps: int, lr: float, warmup_iters: int, warmup_ratio: float
) -> float:
    """The rate of optimiser step `step` (from 0) of a cosine schedule with linear warm-up."""
    warmup = 1.0  # after the warm-up, and for a run without one
    if step < warmup_iters:  # from warmup_ratio at step 0 up to 1 at step warmup_iters
        warmup = warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    # Over the whole run, from step 0: 1 at step 0, 1/2 half-way, 0 at step total_steps.
    cosine = (1 + math.cos(math.pi * step / total_steps)) / 2
    return lr * warmup * cosine  # the two factors multiply
