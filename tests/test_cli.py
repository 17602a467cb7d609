"""`python -m solo_lib`: the main job, kill-and-resume, and two-process DDP on the CPU."""

import csv
import dataclasses
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from run_config import solo as _solo
from run_config import write_config

from solo_lib.data import CIS680Dataset, SOLODataModule, write_coco_dataset, write_dataset
from solo_lib.module import LitSOLO
from solo_lib.paths import REPO_ROOT
from solo_lib.seeding import seed_everything


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


#: Thresholds at which a network trained for an epoch or not at all predicts instances:
#: its scores and masks are still near the 0.01 prior.
EAGER = {"score_threshold": 0.0, "mask_threshold": 0.005, "update_threshold": 0.0}
EAGER_ARGS = [f"--model.config.{field}={value}" for field, value in EAGER.items()]


def _predicted_in_process(checkpoint: Path, data_dir: Path, max_images: int) -> dict[int, dict]:
    """The instances that `SOLO.predict` of `checkpoint` gives, with `EAGER` thresholds, on
    the validation split of the first `max_images` images of `data_dir`, by image id."""
    network = LitSOLO.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).model
    network.cfg = network.cfg.replace(**EAGER)
    data = SOLODataModule(network.cfg, root=str(data_dir), max_images=max_images)
    data.setup("predict")
    predicted = {}
    with torch.no_grad():
        for images, targets in data.predict_dataloader():
            instances = network.predict(images, targets)
            for target, found in zip(targets, instances, strict=True):
                predicted[int(target["image_id"])] = found
    return predicted


def test_main_job_prints_mask_ap_and_checkpoint(tmp_path, tiny_config, tiny_data_dir):
    from test_prediction import assert_results_match

    cfg = tiny_config.replace(max_epochs=1)
    config = write_config(tmp_path, cfg, tiny_data_dir)
    out = _finish(_solo("fit", "--config", str(config)))
    assert "validation mask AP" in out and "AP50" in out
    best = Path(out.split("best checkpoint: ")[1].split(" (")[0])
    assert best.is_file()
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["config"]["name"] == "tiny"

    # predict writes the instances that the checkpoint's network predicts in this process
    out_dir = tmp_path / "predictions"
    predict = _solo(
        "predict",
        "--config",
        str(config),
        "--ckpt_path",
        str(best),
        "--data.max_images=4",
        *EAGER_ARGS,
        f"--predict_output.output_dir={out_dir}",
    )
    assert "results.json" in _finish(predict)
    results = json.loads((out_dir / "results.json").read_text())
    assert len(results) > 5, "at these thresholds the network predicts instances"
    assert_results_match(results, _predicted_in_process(best, tiny_data_dir, max_images=4))
    assert len(list((out_dir / "overlays").glob("*.png"))) == 1  # the validation split of 4

    # export: the ONNX file, checked against PyTorch, and the weights alone, which predict
    # exactly as the training checkpoint (with its optimiser state) does.
    out = _finish(_solo("export", "--ckpt_path", str(best), "--output", str(tmp_path / "m.onnx")))
    difference = float(out.split("largest difference ")[1].split()[0])
    assert difference < 1e-4
    weights = tmp_path / "m.weights.ckpt"
    assert (tmp_path / "m.onnx").is_file()
    assert weights.stat().st_size < 0.5 * best.stat().st_size
    again = tmp_path / "predictions_from_weights"
    _finish(
        _solo(
            "predict",
            "--config",
            str(config),
            "--ckpt_path",
            str(weights),
            "--data.max_images=4",
            *EAGER_ARGS,
            f"--predict_output.output_dir={again}",
        )
    )
    assert (again / "results.json").read_text() == (out_dir / "results.json").read_text()


def _steps_logged(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss_step")]


def test_training_killed_with_sigkill_resumes_from_its_checkpoint(
    tmp_path, tiny_config, tiny_data_dir
):
    cfg = tiny_config.replace(max_epochs=30, warmup_iters=50, lr_milestones=(20, 25))
    config = write_config(tmp_path, cfg, tiny_data_dir, limit_val_batches=0)
    ckpt_dir = tmp_path / "ckpt"
    every_2_steps = [
        "--trainer.callbacks+=ModelCheckpoint",
        f"--trainer.callbacks.dirpath={ckpt_dir}",
        "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.save_top_k=-1",
    ]
    proc = _solo("fit", "--config", str(config), *every_2_steps)
    last = ckpt_dir / "last.ckpt"
    deadline = time.monotonic() + 240
    saved_step = 0
    while saved_step < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if last.exists():
            saved_step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert 4 <= saved_step < 30 * 6, f"no usable checkpoint before the kill (step {saved_step})"

    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    saved_step = checkpoint["global_step"]
    assert checkpoint["optimizer_states"][0]["state"], "momentum buffers were not saved"
    schedule_state = checkpoint["lr_schedulers"][0]
    assert schedule_state["last_epoch"] == saved_step

    resumed = _solo(
        "fit",
        "--config",
        str(config),
        "--trainer.max_steps",
        str(saved_step + 4),
        "--ckpt_path",
        str(last),
        *every_2_steps,
    )
    _finish(resumed)
    runs = sorted((tmp_path / "runs").glob("*/version_*"))
    steps = _steps_logged(runs[-1])
    assert steps and min(steps) >= saved_step, f"resumed run logged steps {steps}"
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == saved_step + 4
    assert final["lr_schedulers"][0]["last_epoch"] == saved_step + 4


def test_two_process_ddp_on_cpu_ends_with_identical_weights(tmp_path, tiny_config, tiny_data_dir):
    config = write_config(tmp_path, tiny_config, tiny_data_dir, limit_val_batches=0)
    proc = _solo(
        "fit",
        "--config",
        str(config),
        "--trainer.accelerator=cpu",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_steps=3",
        "--trainer.callbacks+=rank_weights.SaveRankWeights",
        f"--trainer.callbacks.out_dir={tmp_path}",
    )
    _finish(proc)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)
    seed_everything(tiny_config.seed)
    initial = dict(LitSOLO(tiny_config).named_parameters())
    assert any(not torch.equal(initial[name].detach(), rank0[name]) for name in rank0)


def test_ddp_predict_writes_one_results_file_equal_to_a_single_process_run(
    tmp_path, tiny_config, tiny_data_dir
):
    # A checkpoint of untrained weights: keep every cell and score; untrained masks sit
    # at the prior 0.01, so a mask threshold below it keeps them.
    # 3 validation images on 2 ranks: the sampler repeats one, which must count once.
    from test_export import write_checkpoint

    cfg = tiny_config.replace(
        score_threshold=0.0, mask_threshold=0.005, update_threshold=0.0, val_fraction=0.25
    )
    config = write_config(tmp_path, cfg, tiny_data_dir)
    seed_everything(cfg.seed)
    checkpoint = str(write_checkpoint(LitSOLO(cfg), tmp_path / "untrained.ckpt"))
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _finish(
        _solo(
            "predict",
            "--config",
            str(config),
            "--ckpt_path",
            checkpoint,
            f"--predict_output.output_dir={single}",
        )
    )
    out = _finish(
        _solo(
            "predict",
            "--config",
            str(config),
            "--ckpt_path",
            checkpoint,
            "--trainer.accelerator=cpu",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            f"--predict_output.output_dir={ddp}",
        )
    )
    assert out.count("wrote ") == 1  # rank 0 alone writes

    expected = json.loads((single / "results.json").read_text())
    merged = json.loads((ddp / "results.json").read_text())
    assert len({r["image_id"] for r in expected}) == 3
    assert [r["image_id"] for r in merged] == [r["image_id"] for r in expected]
    # Untrained scores are near ties, so batch-dependent rounding may reorder instances
    # of an image; per image, the same scores must come out.
    for image_id in {r["image_id"] for r in expected}:
        got = sorted(r["score"] for r in merged if r["image_id"] == image_id)
        want = sorted(r["score"] for r in expected if r["image_id"] == image_id)
        assert got == pytest.approx(want, rel=1e-4), image_id
    names = sorted(p.name for p in (ddp / "overlays").iterdir())
    assert names == sorted(p.name for p in (single / "overlays").iterdir())
    assert len(names) == 3


def _parsed_with_checkpoint(tmp_path, monkeypatch, stored, yaml_cfg, data_dir, *args):
    """The `SOLOConfig` that `validate --ckpt_path` ends up with (nothing is run).

    The checkpoint holds only hyper-parameters: all that `--ckpt_path` parsing reads.
    """
    from solo_lib.cli import SOLOCLI
    from solo_lib.data import SOLODataModule

    ckpt = tmp_path / "stored.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": dataclasses.asdict(stored)}}, ckpt)
    config = write_config(tmp_path, yaml_cfg, data_dir)
    monkeypatch.setattr(SOLOCLI, "_run_subcommand", lambda self, subcommand: None)
    cli = SOLOCLI(
        LitSOLO,
        SOLODataModule,
        args=["validate", "--config", str(config), "--ckpt_path", str(ckpt), *args],
    )
    return cli.model.cfg


def test_ckpt_path_gives_the_network_and_the_command_line_the_rest(
    tmp_path, monkeypatch, tiny_config, tiny_data_dir
):
    stored = tiny_config.replace(num_grids=(6, 5, 4, 3, 2), score_threshold=0.1, max_epochs=7)
    cfg = _parsed_with_checkpoint(
        tmp_path,
        monkeypatch,
        stored,
        tiny_config,
        tiny_data_dir,
        "--model.config.score_threshold=0.7",
        "--model.config.max_epochs=20",
    )
    # Lightning alone would give 0.1 and 7 (the checkpoint's) for both.
    assert (cfg.score_threshold, cfg.max_epochs) == (0.7, 20)
    assert cfg.num_grids == (6, 5, 4, 3, 2)  # the trained network's, not the YAML's


def test_ckpt_path_with_a_conflicting_network_field_names_both_values(
    tmp_path, monkeypatch, tiny_config, tiny_data_dir
):
    stored = tiny_config.replace(num_grids=(6, 5, 4, 3, 2))
    with pytest.raises(
        ValueError, match=r"num_grids \(8, 6, 4, 3, 2\) conflicts .* num_grids \(6, 5"
    ):
        _parsed_with_checkpoint(
            tmp_path,
            monkeypatch,
            stored,
            tiny_config,
            tiny_data_dir,
            "--model.config.num_grids=[8, 6, 4, 3, 2]",
        )


def test_resume_with_more_epochs_trains_them(tmp_path, tiny_config, tiny_data_dir):
    """`fit --ckpt_path last.ckpt --model.config.max_epochs 2` after a 1-epoch run trains
    epoch 1. Lightning's own --ckpt_path parsing restored max_epochs 1 from the checkpoint:
    nothing trained, and printing the summary crashed on a missing best score."""
    config = write_config(tmp_path, tiny_config.replace(max_epochs=1), tiny_data_dir)
    out = _finish(_solo("fit", "--config", str(config)))
    last = Path(out.split("last checkpoint: ")[1].split()[0])
    resumed = _finish(
        _solo(
            "fit",
            "--config",
            str(config),
            "--ckpt_path",
            str(last),
            "--model.config.max_epochs=2",
        )
    )
    assert "trained 2 epochs" in resumed
    newest = Path(resumed.split("last checkpoint: ")[1].split()[0])
    assert torch.load(newest, map_location="cpu", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_null_precision_becomes_the_machines_fastest(
    tmp_path, monkeypatch, tiny_config, tiny_data_dir, bf16, expected
):
    from solo_lib import hardware
    from solo_lib.cli import SOLOCLI
    from solo_lib.data import SOLODataModule

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: bf16)
    monkeypatch.setattr(SOLOCLI, "_run_subcommand", lambda self, subcommand: None)
    config = write_config(tmp_path, tiny_config, tiny_data_dir, precision=None, accelerator="cpu")
    cli = SOLOCLI(LitSOLO, SOLODataModule, args=["fit", "--config", str(config)])
    assert cli.trainer.precision == expected
    explicit = SOLOCLI(
        LitSOLO,
        SOLODataModule,
        args=["fit", "--config", str(config), "--trainer.precision=32-true"],
    )
    assert explicit.trainer.precision == "32-true"  # an explicit choice is kept


def test_validate_ap_is_cocoevals_ap_on_predicts_results(tmp_path, tiny_config):
    """The check of record, through the command line: the mask AP that `validate` prints
    for a COCO set is pycocotools' COCOeval(segm) on the results.json that `predict`
    writes for that set, against its annotation file. The model memorises the set first
    (no augmentation, one batch of 4 images, 60 steps: AP50 about 0.26), so that the match
    means something.
    """
    cfg = tiny_config.replace(
        image_size=(128, 160),
        hflip_prob=0.0,
        scale_jitter=(1.0, 1.0),
        batch_size=4,
        max_epochs=60,
        warmup_iters=5,
        lr_milestones=(),
    )
    source = write_dataset(tmp_path / "cis", num_images=4, seed=5)
    image_dir, annotations = write_coco_dataset(CIS680Dataset(source, cfg), tmp_path / "coco")
    config = write_config(tmp_path, cfg, image_dir)
    data = [
        "--data.format=coco",
        f"--data.annotation_file={annotations}",
        f"--data.val_root={image_dir}",
        f"--data.val_annotation_file={annotations}",
    ]
    fit = _finish(_solo("fit", "--config", str(config), *data, "--trainer.limit_val_batches=0"))
    checkpoint = fit.split("last checkpoint: ")[1].split()[0]

    out = _finish(_solo("validate", "--config", str(config), *data, "--ckpt_path", checkpoint))
    printed = {}
    for key in ("AP", "AP50", "AP75"):
        found = re.search(rf"val/{key}[\s│|]+([0-9][0-9.eE-]*)", out)
        assert found, out[-2000:]
        printed[key] = float(found.group(1))

    out_dir = tmp_path / "predictions"
    predict = _solo(
        "predict",
        "--config",
        str(config),
        *data,
        "--ckpt_path",
        checkpoint,
        f"--predict_output.output_dir={out_dir}",
        "--trainer.logger=false",
    )
    stray = REPO_ROOT / "config.yaml"  # the working folder: Lightning's log_dir without a logger
    assert not stray.exists()
    _finish(predict)
    assert not stray.exists(), "predict without a logger wrote config.yaml into the working folder"
    results = json.loads((out_dir / "results.json").read_text())
    ground_truth = COCO(str(annotations))
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    cocoeval = dict(zip(("AP", "AP50", "AP75"), evaluation.stats[:3], strict=True))
    assert cocoeval["AP50"] > 0.1, "the memorised model should find some of its objects"
    # COCOeval's own float64 IoU thresholds (MaskEvaluator): the same AP up to rounding
    assert printed == pytest.approx(cocoeval, abs=1e-6)


def _predicted(out_dir: Path) -> list[dict]:
    """The entries of ``out_dir/results.json``."""
    return json.loads((out_dir / "results.json").read_text())


def test_predict_onnx_writes_the_instances_of_predict_ckpt_path(
    tmp_path, tiny_config, tiny_data_dir
):
    """`predict --onnx` (onnxruntime) against `predict --ckpt_path` (PyTorch) on the
    validation split: the same images, category ids and overlays, scores within 1e-3 and
    masks of IoU >= 0.99 (decoded from their RLE). The network scores hundreds of cells
    (test_export.scoring_model), so post-processing has real work; the ONNX graph has the
    default fixed batch of 1, the config a batch of 2."""
    import pycocotools.mask as mask_utils
    from test_export import scoring_model, write_checkpoint

    from solo_lib.export import export_onnx

    cfg = tiny_config.replace(channels_last=False)
    lit = LitSOLO(cfg)
    lit.model.load_state_dict(scoring_model(cfg).state_dict())
    checkpoint = write_checkpoint(lit, tmp_path / "random.ckpt")
    onnx_file = export_onnx(lit.model.eval(), tmp_path / "random.onnx")
    config = write_config(tmp_path, cfg, tiny_data_dir)
    torch_dir, onnx_dir = tmp_path / "torch", tmp_path / "onnx"
    runs = [
        _solo(
            "predict",
            "--config",
            str(config),
            *source,
            f"--predict_output.output_dir={out_dir}",
        )
        for source, out_dir in (
            (["--ckpt_path", str(checkpoint)], torch_dir),
            (["--onnx", str(onnx_file)], onnx_dir),
        )
    ]
    for run in runs:
        assert "results.json" in _finish(run)

    expected, got = _predicted(torch_dir), _predicted(onnx_dir)
    assert len(expected) > 20, "post-processing should have had work to do"
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        assert (ours["image_id"], ours["category_id"]) == (
            theirs["image_id"],
            theirs["category_id"],
        )
        assert ours.get("file_name") == theirs.get("file_name")
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-3)
        a, b = (mask_utils.decode(r["segmentation"]).astype(bool) for r in (ours, theirs))
        assert (a & b).sum() / max((a | b).sum(), 1) >= 0.99
    overlays = sorted(p.name for p in (onnx_dir / "overlays").iterdir())
    assert overlays == sorted(p.name for p in (torch_dir / "overlays").iterdir())
    assert len(overlays) == len({r["image_id"] for r in expected})
    assert not list(onnx_dir.glob("*.partial.jsonl"))


def test_predict_onnx_on_a_blank_image_writes_no_instances(tmp_path, capsys, tiny_config):
    """A folder with an empty (black) image and a broken file: results.json is an empty
    list, the blank image gets its overlay, the broken file is counted as skipped. The
    untrained network keeps every category probability at the 0.01 prior, below the 0.1
    score threshold: no candidate reaches Matrix NMS."""
    import numpy as np
    from PIL import Image

    from solo_lib.cli import main
    from solo_lib.export import export_onnx
    from solo_lib.model import SOLO

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(folder / "blank.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    torch.manual_seed(0)
    onnx_file = export_onnx(
        SOLO(tiny_config.replace(channels_last=False)).eval(), tmp_path / "m.onnx"
    )
    out_dir = tmp_path / "out"
    main(
        [
            "predict",
            "--onnx",
            str(onnx_file),
            f"--data.predict_dir={folder}",
            f"--predict_output.output_dir={out_dir}",
        ]
    )
    assert _predicted(out_dir) == []
    assert [p.name for p in (out_dir / "overlays").iterdir()] == ["blank.png.png"]
    out = capsys.readouterr().out
    assert "wrote 0 instances of 1 images" in out and "skipped 1 unreadable file" in out


def test_predict_refuses_onnx_and_ckpt_path_together(tmp_path, capsys):
    from solo_lib.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--onnx", "m.onnx", "--ckpt_path", "best.ckpt"])
    err = capsys.readouterr().err
    assert "--onnx m.onnx and --ckpt_path best.ckpt: give one" in err


def test_predict_onnx_names_a_file_that_is_not_a_solo_export(tmp_path, capsys):
    from solo_lib.cli import main

    (tmp_path / "notes.onnx").write_text("not a model")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--onnx", str(tmp_path / "notes.onnx")])
    assert exit_info.value.code == 2
    assert f"error: --onnx {tmp_path / 'notes.onnx'}: not an ONNX model" in capsys.readouterr().err
