"""The plots of notebook 05 (solo_lib.viz): level maps, masks, score changes, PR curves, results."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from solo_lib.evaluation import MaskEvaluator
from solo_lib.viz import (
    class_color,
    plot_level_maps,
    plot_mask_grid,
    plot_pr_curves,
    plot_results,
    plot_score_changes,
    plot_side_by_side,
)

NAMES = ("vehicle", "person", "animal")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _maps(peak: float) -> list[torch.Tensor]:
    """Two levels, S = 4 and 2, zero but for cells (1, 2) = peak, (3, 0) = 0.3 and (0, 1) = 0.6."""
    fine, coarse = torch.zeros(4, 4), torch.zeros(2, 2)
    fine[1, 2], fine[3, 0] = peak, 0.3
    coarse[0, 1] = 0.6
    return [fine, coarse]


def test_level_maps_share_one_scale_and_ring_the_cells_above_the_threshold():
    fig = plot_level_maps([("raw", _maps(0.8)), ("after", _maps(0.4))], threshold=0.5)
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 4
    assert [ax.get_title() for ax in panels[:2]] == ["level 0: S=4", "level 1: S=2"]
    assert [panels[0].get_ylabel(), panels[2].get_ylabel()] == ["raw", "after"]
    # One colour scale for all panels: 0 to the largest value shown.
    assert [ax.images[0].get_clim() for ax in panels] == [(0.0, pytest.approx(0.8))] * 4
    # Rings at (x = col, y = row) of the cells above 0.5, counted below each panel.
    rings = [ax.collections[0].get_offsets().tolist() for ax in panels]
    assert rings == [[[2, 1]], [[1, 0]], [], [[1, 0]]]
    assert [ax.get_xlabel() for ax in panels] == [
        "1 above 0.5",
        "1 above 0.5",
        "0 above 0.5",
        "1 above 0.5",
    ]
    with pytest.raises(ValueError, match="same number"):
        plot_level_maps([("raw", _maps(0.8)), ("after", _maps(0.4)[:1])])


def test_mask_grid_outlines_binary_masks_only_where_the_threshold_cuts():
    masks = torch.zeros(3, 8, 10)
    masks[0, 2:6, 3:7] = 0.9
    masks[1] = 0.2  # nothing above 0.5: no outline
    masks[2, :, :5] = 0.7
    fig = plot_mask_grid(masks, ["a", "b", "c"], threshold=0.5, ncols=2)
    assert len(fig.axes) == 4  # 2 x 2, the last one empty
    titled = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in titled] == ["a", "b", "c"]
    assert [len(ax.collections) for ax in titled] == [1, 0, 1]
    assert titled[0].images[0].get_clim() == (0.0, 1.0)
    empty = plot_mask_grid(torch.zeros(0, 8, 10), [])
    assert empty.axes[0].texts[0].get_text() == "no masks"
    with pytest.raises(ValueError, match="one title each"):
        plot_mask_grid(masks, ["a"])


def test_score_changes_draw_before_and_after_bars_in_class_colours():
    fig = plot_score_changes(
        torch.tensor([0.9, 0.8, 0.7]),
        torch.tensor([0.9, 0.3, 0.7]),
        torch.tensor([2, 2, 3]),
        threshold=0.05,
        class_names=NAMES,
    )
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([0.9, 0.9, 0.8, 0.3, 0.7, 0.7])  # (before, after) per mask
    colors = [bar.get_facecolor()[:3] for bar in ax.patches]
    assert colors[3] == pytest.approx(class_color(2)) and colors[5] == pytest.approx(class_color(3))
    assert ax.patches[2].get_alpha() < 1 and ax.patches[3].get_alpha() in (None, 1)
    assert [line.get_ydata()[0] for line in ax.lines] == [0.05]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["before", "after Matrix NMS", "person", "animal", "dropped below 0.05"]
    with pytest.raises(ValueError, match=r"all be \(n,\)"):
        plot_score_changes(torch.ones(2), torch.ones(3), torch.ones(2))


def _square(size: int, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    return mask


def test_pr_curves_plot_the_evaluator_curves_and_their_area_is_ap50():
    # Two vehicles: the best prediction finds one, the second is a false positive, the
    # other vehicle is missed (recall stops at 0.5). One person, not found. No animal.
    truth = {
        "masks": torch.stack(
            [_square(40, 0, 0, 10, 10), _square(40, 20, 20, 30, 30), _square(40, 0, 25, 8, 35)]
        ),
        "labels": torch.tensor([1, 1, 2]),
    }
    prediction = {
        "masks": torch.stack([_square(40, 0, 0, 10, 10), _square(40, 30, 0, 40, 10)]),
        "labels": torch.tensor([1, 1]),
        "scores": torch.tensor([0.9, 0.8]),
    }
    evaluator = MaskEvaluator(NAMES)
    evaluator.update([prediction], [truth])
    metrics = evaluator.compute()
    curves, ap50 = metrics["pr_curves"], metrics["per_class_AP50"]
    assert ap50["vehicle"] == pytest.approx(0.5, abs=0.01) and ap50["person"] == 0.0
    assert math.isnan(ap50["animal"])
    # COCO's AP50 is the mean over 101 recall points, 0 beyond the highest recall.
    assert curves["vehicle"]["precision"].sum().item() / 101 == pytest.approx(ap50["vehicle"])

    vehicle, person, animal = plot_pr_curves(curves, ap50).axes
    [line] = vehicle.lines
    assert np.allclose(line.get_xdata(), curves["vehicle"]["recall"].numpy())
    assert np.allclose(line.get_ydata(), curves["vehicle"]["precision"].numpy())
    assert line.get_color() == class_color(1)
    assert vehicle.get_title() == f"vehicle: AP50 {ap50['vehicle']:.3f}"
    assert [t.get_text() for t in person.texts] == ["no match at IoU 0.5"]
    assert [t.get_text() for t in animal.texts] == ["no ground truth"]
    assert animal.get_title() == "animal"
    with pytest.raises(ValueError, match="empty"):
        plot_pr_curves({})


def test_results_put_each_ground_truth_beside_its_predictions():
    image = np.full((20, 30, 3), 0.5)
    gt = {"masks": torch.zeros(1, 20, 30, dtype=torch.bool), "labels": torch.tensor([2])}
    gt["masks"][0, 2:8, 2:8] = True
    empty = {
        "masks": torch.zeros(0, 20, 30, dtype=torch.bool),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
    }
    found = {"masks": gt["masks"], "labels": gt["labels"], "scores": torch.tensor([0.75])}
    titles = [("gt 0", "pred 0"), ("gt 1", "pred 1"), ("gt 2", "pred 2")]
    fig = plot_results([image] * 3, [gt] * 3, [found, empty, found], titles, NAMES)
    assert len(fig.axes) == 8  # 2 rows of 2 (ground truth, prediction) pairs
    assert [ax.get_title() for ax in fig.axes[:6]] == [t for pair in titles for t in pair]
    assert [t.get_text() for t in fig.axes[1].texts] == ["person 0.75"]  # scores: predictions
    assert [t.get_text() for t in fig.axes[0].texts] == ["person"]
    assert len(fig.axes[3].texts) == 0 and not fig.axes[7].images  # no prediction; unused panel
    with pytest.raises(ValueError, match="as many"):
        plot_results([image], [gt, gt], [found])


def test_side_by_side_puts_each_models_predictions_in_its_own_column():
    image = np.full((20, 30, 3), 0.5)
    gt = {"masks": torch.zeros(1, 20, 30, dtype=torch.bool), "labels": torch.tensor([1])}
    gt["masks"][0, 2:8, 2:8] = True
    empty = {
        "masks": torch.zeros(0, 20, 30, dtype=torch.bool),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
    }
    found = {"masks": gt["masks"], "labels": gt["labels"], "scores": torch.tensor([0.5])}
    titles = [("gt 0", "a 0", "b 0"), ("gt 1", "a 1", "b 1")]
    fig = plot_side_by_side([image] * 2, [gt] * 2, [[found, empty], [empty, found]], titles, NAMES)
    assert len(fig.axes) == 6  # 2 rows of (ground truth, model a, model b)
    assert [ax.get_title() for ax in fig.axes] == [t for row in titles for t in row]
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert texts == [["vehicle"], ["vehicle 0.50"], [], ["vehicle"], [], ["vehicle 0.50"]]
    with pytest.raises(ValueError, match="as many"):
        plot_side_by_side([image] * 2, [gt] * 2, [[found], [found, empty]])
    with pytest.raises(ValueError, match="one title per panel"):
        plot_side_by_side([image], [gt], [[found]], [("gt", "a", "b")])
