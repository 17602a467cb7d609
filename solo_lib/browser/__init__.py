"""The interactive result browser: `cache_outputs` runs the network once, `ResultBrowser`
re-runs only post-processing as its sliders move (notebook 05).

- `cache`: the network's probabilities for a few images, kept compactly;
- `widget`: the ipywidgets view of one image at the chosen thresholds.
"""

from solo_lib.browser.cache import CachedOutputs, cache_outputs
from solo_lib.browser.widget import ResultBrowser, View

__all__ = ["CachedOutputs", "ResultBrowser", "View", "cache_outputs"]
