"""One seeding helper, so that a run is reproducible from its config."""

from __future__ import annotations

import pytorch_lightning as pl


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch (and DataLoader workers) with `seed`; returns it."""
    return pl.seed_everything(seed, workers=True, verbose=False)
