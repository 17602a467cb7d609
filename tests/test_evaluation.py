"""Mask AP on hand-made predictions whose AP is known, and the empty-image cases."""

import math
import pickle

import pytest
import torch

from solo_lib.evaluation import (
    MaskEvaluator,
    above_score,
    image_f1,
    match_predictions,
    recall_by_size,
    typical_indices,
)

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
    # Labels are 1..C: a 0-based label would otherwise be scored as another class, and
    # one above C would be left out of the AP without a word.
    with pytest.raises(ValueError, match=r"predictions\[1\] has label 4, not in 1..3"):
        evaluator.update([pred((A, 1, 0.9)), pred((A, 4, 0.9))], [gt((A, 1)), gt((A, 1))])
    with pytest.raises(ValueError, match=r"ground_truth\[0\] has label 0, not in 1..3"):
        evaluator.update([pred((A, 1, 0.9))], [gt((A, 0))])
    assert evaluator.compute()["num_images"] == 0  # not even the good first image


def test_a_detection_on_a_crowd_region_is_ignored_and_the_crowd_is_never_missed():
    """pycocotools' rule: crowd ground truth is neither matched as a true positive nor missed."""
    crowd = {
        "masks": torch.stack([A, rect(0, 20, 14, 24)]),
        "labels": torch.tensor([1, 1]),
        "iscrowd": torch.tensor([0, 1]),
    }
    # A high-scored false positive on the crowd region would halve the precision otherwise.
    detections = pred((rect(2, 18, 16, 22), 1, 0.95), (A, 1, 0.9))
    evaluator = MaskEvaluator(CLASSES)
    evaluator.update([detections], [crowd])
    result = evaluator.compute()
    assert result["AP"] == pytest.approx(1.0) and result["num_ground_truth"] == 1
    evaluator.reset()
    evaluator.update([detections], [{**crowd, "iscrowd": torch.tensor([0, 0])}])
    assert evaluator.compute()["AP50"] < 0.9  # counted as a real object, the crowd is missed


def test_mask_ap_equals_pycocotools_on_the_original_annotation_file(tmp_path, tiny_data_dir):
    """The check of record: the AP of MaskEvaluator fed with data set items equals COCOeval
    (iouType "segm") run on the written results against the annotation file itself.

    Predictions are the stored masks, shifted, relabelled, duplicated and scored so that
    every kind of match occurs (true and false positives at several IoUs, a missed object,
    a detection on a crowd region); the comparison needs no trained model.
    """
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from solo_lib.config import SOLOConfig
    from solo_lib.data import CIS680Dataset, CocoInstanceDataset, write_coco_dataset
    from solo_lib.prediction import to_coco_results

    cfg = SOLOConfig.cpu()
    image_dir, ann_file = write_coco_dataset(CIS680Dataset(tiny_data_dir, cfg), tmp_path / "coco")
    payload = json.loads(ann_file.read_text())
    payload["annotations"][1]["iscrowd"] = 1  # one crowd region
    ann_file.write_text(json.dumps(payload))
    dataset = CocoInstanceDataset(image_dir, ann_file, cfg)

    generator = torch.Generator().manual_seed(0)
    evaluator, results = MaskEvaluator(cfg.class_names), []
    for i in range(len(dataset)):
        truth = dataset[i][1]["original"]
        masks, labels = truth["masks"], truth["labels"]
        shifts = torch.randint(-4, 5, (len(masks), 2), generator=generator).tolist()
        moved = torch.stack([m.roll(tuple(s), (0, 1)) for m, s in zip(masks, shifts, strict=True)])
        wrong = labels % cfg.num_classes + 1
        pred_masks = torch.cat([moved, moved[:1], masks[1:2]])[: 2 * len(masks)]
        pred_labels = torch.cat([labels, wrong[:1], labels[1:2]])[: 2 * len(masks)]
        n = len(pred_masks)
        keep = torch.rand(n, generator=generator) > 0.15  # some objects are missed
        prediction = {
            "masks": pred_masks[keep],
            "labels": pred_labels[keep],
            "scores": torch.rand(n, generator=generator)[keep],
        }
        evaluator.update([prediction], [truth])
        results += to_coco_results(prediction, image_id=dataset.coco_ids[i])
    ours = evaluator.compute()

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    ap, ap50, ap75 = coco_eval.stats[:3]
    assert 0.2 < ap < 0.9  # a score with something to compare
    assert (ours["AP"], ours["AP50"], ours["AP75"]) == pytest.approx((ap, ap50, ap75), abs=1e-4)


def test_an_iou_of_exactly_055_matches_at_055_as_in_cocoeval():
    """Hand-derived: a 20-pixel object and a prediction covering 11 of its pixels (IoU
    11/20 = 0.55 exactly) is a match at IoU 0.50 and 0.55 and at none of the 8 higher
    thresholds, so AP = 2/10 (COCOeval's >= at its float64 thresholds). With torchmetrics'
    float32 thresholds 0.55 became 0.55000001 and the AP 1/10."""
    evaluator = MaskEvaluator(CLASSES)
    inside = rect(0, 4, 0, 2) | rect(0, 3, 2, 3)  # 8 + 3 = 11 of the object's 20 pixels
    evaluator.update([pred((inside, 1, 0.9))], [gt((rect(0, 4, 0, 5), 1))])
    result = evaluator.compute()
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP"] == pytest.approx(0.2)


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


def test_image_f1_and_typical_indices_by_hand():
    prediction = pred((A, 1, 0.9), (C, 2, 0.4))  # A found, C of the wrong class
    assert image_f1(prediction, gt((A, 1), (B, 1))) == pytest.approx(2 * 1 / (2 + 2))
    assert image_f1(pred(), gt()) == 1.0 and image_f1(pred(), gt((A, 1))) == 0.0
    values = [0.9, 0.1, 0.5, 0.7, 0.3]  # ranked: 1 (0.1), 4, 2, 3, 0 (0.9)
    assert typical_indices(values, 3) == [4, 2, 3]
    assert typical_indices(values, 1) == [2]
    assert typical_indices(values[:2], 5) == [1, 0]


def test_found_objects_and_recall_by_size_by_hand():
    match = match_predictions(pred((A, 1, 0.9), (C, 2, 0.4)), gt((A, 1), (B, 1), (C, 2)))
    assert match.found.tolist() == [True, False, True]
    sizes = torch.tensor([4.0, 10.0, 12.0, 30.0])
    found = torch.tensor([False, True, False, True])
    recalls, counts = recall_by_size(sizes, found, [0, 8, 16, 32, 64])
    assert counts == [1, 2, 1, 0]
    assert recalls[:3] == [0.0, 0.5, 1.0] and math.isnan(recalls[3])


def _five_images():
    """Five images whose AP depends on each image counting once (hand-made).

    Images 1 to 4 are found, each with a low-scored false positive; image 0, the one
    the sampler repeats, is a miss: a confident mask in the wrong place.
    """
    images = [(pred((B, 3, 0.95)), gt((C, 3)))]
    for i in range(1, 5):
        truth = gt((A, 1), (C, 3)) if i % 2 else gt((C, 3))
        guesses = [(C, 3, 0.5 + 0.1 * i), (rect(0, 4, 20, 24), 3, 0.2)]
        if i % 2:
            guesses.append((A, 1, 0.6))
        images.append((pred(*guesses), truth))
    return images


def _evaluate_on_rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    # DistributedSampler(shuffle=False) over 5 images pads to 6: rank 0 gets 0, 2, 4,
    # rank 1 gets 1, 3 and image 0 again.
    ids = [0, 2, 4] if rank == 0 else [1, 3, 0]
    images = _five_images()
    evaluator = MaskEvaluator(CLASSES)
    for i in ids:
        evaluator.update([images[i][0]], [images[i][1]], image_ids=[i])
    result = evaluator.compute()
    queue.put((rank, result["AP"], result["AP50"], result["num_images"]))
    dist.destroy_process_group()


def test_two_processes_give_the_ap_of_one_and_count_a_repeated_image_once():
    import socket

    import torch.multiprocessing as mp

    images = _five_images()
    single = MaskEvaluator(CLASSES)
    single.update([p for p, _ in images], [t for _, t in images], image_ids=list(range(5)))
    expected = single.compute()
    twice = MaskEvaluator(CLASSES)  # image 0 counted twice: what the padding would do
    twice.update([p for p, _ in images] + [images[0][0]], [t for _, t in images] + [images[0][1]])
    assert twice.compute()["AP"] != pytest.approx(expected["AP"], abs=1e-4)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [
        context.Process(target=_evaluate_on_rank, args=(rank, 2, port, queue)) for rank in (0, 1)
    ]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    for _, ap, ap50, num_images in results:
        assert num_images == 5
        assert (ap, ap50) == pytest.approx((expected["AP"], expected["AP50"]), abs=1e-6)


class _Sent(Exception):
    """What one fake rank handed to `all_gather_object`, pickled as the real call would."""

    def __init__(self, obj: object) -> None:
        super().__init__()
        self.obj = pickle.loads(pickle.dumps(obj))


def _fake_two_rank_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """`torch.distributed` as a process in an initialised group of 2 sees it."""
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)


def test_two_ranks_without_ids_keep_every_image(monkeypatch):
    """Two ranks, images given without ids: all five are kept on both ranks.

    Rank 0 holds A found (0.9) and B missed; rank 1 B found (0.8), a false positive
    (0.7) on an image without objects and A found (0.6). All masks exact, class 1, so
    every IoU threshold gives the same AP. By score: TP, TP, FP, TP over 4 objects:
    precision 1 up to recall 0.5, then 3/4 up to 0.75: (51 + 25 * 0.75) / 101. Ranks
    that numbered their images from 0 each and merged them by number would keep 3 (AP
    67/101).

    The group is simulated: each evaluator's `all_gather_object` payload is taken
    (pickled, as gloo sends it), then each rank's compute is given both payloads.
    """
    rank0 = MaskEvaluator(CLASSES)
    rank0.update([pred((A, 1, 0.9)), pred()], [gt((A, 1)), gt((B, 1))])
    rank1 = MaskEvaluator(CLASSES)
    rank1.update(
        [pred((B, 1, 0.8)), pred((C, 1, 0.7)), pred((A, 1, 0.6))],
        [gt((B, 1)), gt(), gt((A, 1))],
    )
    _fake_two_rank_group(monkeypatch)

    def send(output: list, obj: object) -> None:
        raise _Sent(obj)

    monkeypatch.setattr(torch.distributed, "all_gather_object", send)
    payloads = []
    for evaluator in (rank0, rank1):
        with pytest.raises(_Sent) as sent:
            evaluator.compute()
        payloads.append(sent.value.obj)

    def gather(output: list, obj: object) -> None:
        output[:] = payloads

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    for evaluator in (rank0, rank1):
        result = evaluator.compute()
        assert result["num_images"] == 5 and result["num_ground_truth"] == 4
        assert result["AP"] == pytest.approx((51 + 25 * 0.75) / 101)


def test_an_image_without_id_is_never_merged_with_a_named_one():
    """An image given without an id is a new one, even after images with ids 0, 1, ...:
    here two images, one object each, one found (recall 1/2: 51 of 101 points)."""
    evaluator = MaskEvaluator(CLASSES)
    evaluator.update([pred((A, 1, 0.9))], [gt((A, 1))])
    evaluator.update([pred()], [gt((B, 1))], image_ids=[0])
    result = evaluator.compute()
    assert result["num_images"] == 2
    assert result["AP"] == pytest.approx(51 / 101)


def test_above_score_keeps_the_same_instances_in_every_field():
    """Scores 0.9, 0.3, 0.1, 0.3 at threshold 0.3: instances 0, 1 and 3 (0.3 itself kept),
    their masks and labels with them, in order."""
    masks = torch.zeros(4, 2, 2, dtype=torch.bool)
    for i in range(4):
        masks[i].view(-1)[i] = True  # instance i marks pixel i
    prediction = {
        "masks": masks,
        "labels": torch.tensor([1, 2, 3, 1]),
        "scores": torch.tensor([0.9, 0.3, 0.1, 0.3]),
    }
    kept = above_score(prediction, 0.3)
    assert kept["labels"].tolist() == [1, 2, 1]
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.3, 0.3])
    assert [int(m.view(-1).nonzero()) for m in kept["masks"]] == [0, 1, 3]
    assert above_score(prediction, 0.95)["masks"].shape == (0, 2, 2)
