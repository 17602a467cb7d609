"""Mask AP on hand-made predictions whose AP is known, and the empty-image cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from solo_lib.evaluation import MaskEvaluator, ground_truth_at_original_size, match_predictions

H, W = 20, 24
CLASSES = ("vehicle", "person", "animal")


def rect(y1, y2, x1, x2):
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    return mask


def gt(*objects):
    """Ground truth from (mask, label) pairs."""
    if not objects:
        return {"masks": torch.zeros((0, H, W), dtype=torch.bool), "labels": torch.zeros(0).long()}
    masks, labels = zip(*objects, strict=True)
    return {"masks": torch.stack(masks), "labels": torch.tensor(labels)}


def pred(*objects):
    """Predictions from (mask, label, score) triples."""
    if not objects:
        empty = gt()
        return {**empty, "scores": torch.zeros(0)}
    masks, labels, scores = zip(*objects, strict=True)
    return {
        "masks": torch.stack(masks),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores),
    }


A, B, C = rect(0, 10, 0, 10), rect(10, 20, 12, 22), rect(2, 8, 14, 22)


def evaluate(predictions, ground_truth):
    evaluator = MaskEvaluator(CLASSES)
    evaluator.update(predictions, ground_truth)
    return evaluator.compute()


def test_perfect_predictions_give_ap_one():
    result = evaluate(
        [pred((A, 1, 0.9), (B, 2, 0.8)), pred((C, 1, 0.7))],
        [gt((A, 1), (B, 2)), gt((C, 1))],
    )
    assert result["AP"] == pytest.approx(1.0)
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == pytest.approx(1.0)
    assert result["per_class_AP"]["vehicle"] == pytest.approx(1.0)
    assert result["per_class_AP"]["person"] == pytest.approx(1.0)
    assert math.isnan(result["per_class_AP"]["animal"])  # no animal anywhere: undefined
    curve = result["pr_curves"]["vehicle"]
    assert curve["recall"].shape == (101,) and torch.all(curve["precision"] == 1.0)


def test_true_and_false_positives_101_point_ap():
    # Two vehicles; ranked predictions: TP (0.9), FP (0.8), TP (0.7).
    # Precision-recall: (1.0, 0.5), (0.5, 0.5), (2/3, 1.0). Interpolated precision is 1 on the
    # 51 recall points 0.00..0.50 and 2/3 on the 50 points 0.51..1.00.
    result = evaluate(
        [pred((A, 1, 0.9), (B, 1, 0.8), (C, 1, 0.7))],
        [gt((A, 1), (C, 1))],
    )
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert result["AP50"] == pytest.approx(expected, abs=1e-6)
    assert result["AP"] == pytest.approx(expected, abs=1e-6)  # exact masks: same at every IoU
    curve = result["pr_curves"]["vehicle"]
    torch.testing.assert_close(
        curve["precision"][[0, 50, 51, 100]], torch.tensor([1, 1, 2 / 3, 2 / 3])
    )
    assert curve["scores"][0].item() == pytest.approx(0.9)
    assert curve["scores"][100].item() == pytest.approx(0.7)


def test_false_positive_ranked_first_halves_ap():
    result = evaluate([pred((B, 1, 0.9), (A, 1, 0.5))], [gt((A, 1))])
    assert result["AP"] == pytest.approx(0.5)


def test_iou_thresholds_and_per_class_ap():
    # An 8x8 prediction inside a 10x10 vehicle: IoU 0.64, a match at IoU 0.50, 0.55, 0.60 only.
    inner = rect(1, 9, 1, 9)
    result = evaluate(
        [pred((inner, 1, 0.9), (B, 2, 0.8), (A, 2, 0.95))],
        [gt((A, 1), (B, 2))],
    )
    assert result["per_class_AP"]["vehicle"] == pytest.approx(0.3)
    assert result["per_class_AP50"]["vehicle"] == pytest.approx(1.0)
    assert result["per_class_AP"]["person"] == pytest.approx(0.5)  # FP (0.95) before TP (0.8)
    assert result["AP"] == pytest.approx((0.3 + 0.5) / 2)
    assert result["AP75"] == pytest.approx((0.0 + 0.5) / 2)


def test_false_positive_on_an_image_without_ground_truth_counts():
    # torchmetrics' segm-only evaluation drops images without ground truth, and with them
    # this false positive (AP would be 1.0).
    result = evaluate([pred((A, 1, 0.8)), pred((B, 1, 0.9))], [gt((A, 1)), gt()])
    assert result["AP"] == pytest.approx(0.5)


def test_images_without_predictions_or_ground_truth():
    result = evaluate([pred((A, 1, 0.9)), pred(), pred()], [gt((A, 1)), gt((B, 2)), gt()])
    assert result["per_class_AP"]["vehicle"] == pytest.approx(1.0)
    assert result["per_class_AP"]["person"] == pytest.approx(0.0)  # missed: 0, not undefined
    assert result["AP"] == pytest.approx(0.5)
    assert result["pr_curves"]["person"]["recall"].numel() == 0
    assert (result["num_images"], result["num_predictions"], result["num_ground_truth"]) == (
        3,
        1,
        2,
    )


def test_no_predictions_at_all_is_ap_zero():
    result = evaluate([pred(), pred()], [gt((A, 1)), gt((B, 3))])
    assert result["AP"] == 0.0 and result["AP50"] == 0.0
    assert result["per_class_AP"] == {
        "vehicle": 0.0,
        "person": pytest.approx(math.nan, nan_ok=True),
        "animal": 0.0,
    }


def test_nothing_to_measure_is_nan():
    assert math.isnan(evaluate([pred(), pred()], [gt(), gt()])["AP"])
    assert math.isnan(evaluate([pred((A, 1, 0.5))], [gt()])["AP"])
    assert math.isnan(MaskEvaluator(CLASSES).compute()["AP"])


def test_update_accumulates_and_reset_forgets():
    evaluator = MaskEvaluator(CLASSES)
    evaluator.update([pred((A, 1, 0.9))], [gt((A, 1))])
    evaluator.update([pred((A, 1, 0.8))], [gt((B, 1))])
    # One of two objects found, at precision 1: recall points 0.00..0.50, 51 of 101.
    assert evaluator.compute()["AP"] == pytest.approx(51 / 101)
    evaluator.reset()
    evaluator.update([pred((A, 1, 0.9))], [gt((A, 1))])
    assert evaluator.compute()["AP"] == pytest.approx(1.0)


def test_update_rejects_bad_input():
    evaluator = MaskEvaluator(CLASSES)
    with pytest.raises(ValueError, match=r"predictions\[0\].*scores"):
        evaluator.update([gt((A, 1))], [gt((A, 1))])
    with pytest.raises(ValueError, match="original image size"):
        evaluator.update(
            [pred((A, 1, 0.9))], [{"masks": A[None, :10], "labels": torch.tensor([1])}]
        )
    with pytest.raises(ValueError, match="2 predictions for 1"):
        evaluator.update([pred(), pred()], [gt()])


def test_ground_truth_at_original_size_undoes_resize_and_padding():
    original = torch.zeros((2, 5, 6), dtype=torch.uint8)
    original[0, 1:3, 2:5] = 1
    original[1, 4:, :2] = 1
    # Scaled by 2 to 10x12 and placed 3 columns and 1 row into a 12x20 input.
    padded = torch.zeros((2, 12, 20), dtype=torch.uint8)
    padded[:, 1:11, 3:15] = F.interpolate(original[None].float(), scale_factor=2)[0].byte()
    target = {
        "masks": padded,
        "labels": torch.tensor([1, 3]),
        "orig_size": torch.tensor([5, 6]),
        "content_box": torch.tensor([3, 1, 15, 11]),
    }
    back = ground_truth_at_original_size(target)
    assert back["masks"].dtype == torch.bool
    assert torch.equal(back["masks"], original.bool())
    assert back["labels"].tolist() == [1, 3]

    empty = ground_truth_at_original_size({**target, "masks": padded[:0], "labels": torch.zeros(0)})
    assert empty["masks"].shape == (0, 5, 6)


def test_match_predictions_one_to_one_by_score():
    inner = rect(1, 9, 1, 9)  # IoU 0.64 with A
    prediction = pred((inner, 1, 0.6), (A, 1, 0.9), (B, 1, 0.5), (C, 2, 0.4))
    match = match_predictions(prediction, gt((A, 1), (C, 1)))
    # A (0.9) takes the vehicle A; inner (0.6) finds it taken; C has the wrong label.
    assert match.matched_gt.tolist() == [-1, 0, -1, -1]
    assert match.iou[1].item() == pytest.approx(1.0)
    assert match.summary() == "1 of 4 predictions match ground truth (2 objects)"
    assert match_predictions(pred(), gt((A, 1))).summary() == (
        "0 of 0 predictions match ground truth (1 objects)"
    )
    assert match_predictions(prediction, gt()).num_matched == 0
