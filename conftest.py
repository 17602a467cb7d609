"""pytest set-up shared by the unit tests and the notebooks run under nbval.

The test suite runs in fast mode (``SOLO_FAST=1``): short training runs and few
images. The notebook kernels that nbval starts inherit this environment.
"""

import os

os.environ.setdefault("SOLO_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collectstart(collector):
    """Ignore stderr (warnings, progress bars) when nbval compares notebook outputs."""
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
