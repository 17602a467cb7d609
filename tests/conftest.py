"""Fixtures shared by the unit tests: a tiny configuration and a tiny data set.

`tests/support` (callbacks and helpers the tests give to the command line, which other
processes import too) is put on the import path here, in one place.
"""

import sys
from pathlib import Path

import pytest

from solo_lib.config import SOLOConfig

sys.path.insert(0, str(Path(__file__).parent / "support"))


@pytest.fixture(scope="session")
def tiny_config() -> SOLOConfig:
    """The cpu preset shrunk so that a training step takes well under a second."""
    return SOLOConfig.cpu().replace(
        name="tiny",
        image_size=(96, 128),
        batch_size=2,
        num_workers=0,
        fpn_channels=32,
        head_channels=32,
        num_stacked_convs=1,
        num_grids=(8, 6, 4, 3, 2),
        warmup_iters=2,
        max_epochs=4,
        time_budget_min=None,
        lr_schedule="step",
        lr_milestones=(2, 3),
    )


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-image built-in data set in the CIS 680 format, written once per session."""
    from solo_lib.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("tiny_data"), num_images=12, seed=1)
