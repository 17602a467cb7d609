"""Pictures of the course, in one colour per class everywhere.

- `instances`: images in the original frame with translucent masks, boxes and scores
  (notebooks 01 to 05);
- `curves`: a training run's losses, validation AP and learning-rate schedule
  (notebook 04);
- `results`: post-processing and evaluation, level maps to precision-recall curves
  (notebook 05).
"""

from solo_lib.viz.curves import plot_learning_rate, plot_training_curves, plot_validation_ap
from solo_lib.viz.instances import (
    CLASS_COLORS,
    class_color,
    denormalize,
    display_image,
    draw_instances,
    draw_item,
)
from solo_lib.viz.results import (
    plot_level_maps,
    plot_mask_grid,
    plot_pr_curves,
    plot_results,
    plot_score_changes,
    plot_side_by_side,
)

__all__ = [
    "CLASS_COLORS",
    "class_color",
    "denormalize",
    "display_image",
    "draw_instances",
    "draw_item",
    "plot_learning_rate",
    "plot_level_maps",
    "plot_mask_grid",
    "plot_pr_curves",
    "plot_results",
    "plot_score_changes",
    "plot_side_by_side",
    "plot_training_curves",
    "plot_validation_ap",
]
