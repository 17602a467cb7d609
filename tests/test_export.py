"""ONNX export: onnxruntime against PyTorch, before and after post-processing."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from solo_lib.config import SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.export import TOLERANCE, OnnxSOLO, export_onnx, output_names, save_weights
from solo_lib.model import SOLO
from solo_lib.module import LitSOLO
from solo_lib.postprocess import mask_iou


def scoring_model(cfg: SOLOConfig) -> SOLO:
    """A SOLO whose outputs are not the initial constants: random final mask convs (or
    SOLOv2's kernel conv), and category logits centred at 0 (p about 0.5), so that
    post-processing has hundreds of candidates, overlapping masks and real work for
    Matrix NMS. (test_cli and test_postprocess use it too.)"""
    torch.manual_seed(0)
    model = SOLO(cfg).eval()
    head = model.head
    with torch.no_grad():
        mask_outputs = {
            "decoupled": lambda: [*head.mask_out_x, *head.mask_out_y],
            "vanilla": lambda: [*head.mask_out],
            "solov2": lambda: [head.kernel_out],
        }[cfg.mask_head if cfg.head == "solo" else "solov2"]()
        for conv in mask_outputs:
            conv.weight.normal_(0, 0.5)
            conv.bias.normal_(0, 1.0)
        head.cate_out.weight.normal_(0, 0.5)
        head.cate_out.bias.zero_()
    return model


def write_checkpoint(lit: LitSOLO, path: Path) -> Path:
    """`lit` saved as `fit` saves it, without the optimiser state (what ``--ckpt_path``
    and ``export`` read). (test_cli uses it too.)"""
    import pytorch_lightning as pl

    checkpoint = {
        "state_dict": lit.state_dict(),
        "hyper_parameters": dict(lit.hparams),
        "pytorch-lightning_version": pl.__version__,
    }
    torch.save(checkpoint, path)
    return path


def assert_same_instances_as_pytorch(got: list[dict], expected: list[dict]) -> None:
    """onnxruntime's instances against PyTorch's: the same labels, scores within 1e-3, each
    mask at IoU >= 0.99 with its counterpart; post-processing had real work to do."""
    assert sum(len(p["labels"]) for p in expected) > 10
    for ours, theirs in zip(got, expected, strict=True):
        assert torch.equal(ours["labels"], theirs["labels"])
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=1e-3, rtol=0)
        ious = mask_iou(ours["masks"], theirs["masks"])  # (n, n)
        assert bool((ious.diagonal() >= 0.99).all())


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_config, tiny_data_dir):
    """(torch model, ONNX path, a validation batch) at the tiny config, dynamic batch."""
    cfg = tiny_config.replace(channels_last=False)
    model = scoring_model(cfg)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "solo.onnx", dynamic_batch=True)
    data = SOLODataModule(cfg, root=str(tiny_data_dir))
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    return model, path, batch


def test_the_file_passes_the_onnx_checker_and_names_its_outputs(exported):
    model, path, _ = exported
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert [o.name for o in graph.graph.output] == output_names(model.cfg)
    assert [i.name for i in graph.graph.input] == ["images"]


def test_onnxruntime_equals_pytorch_to_1e_4(exported):
    """The category probabilities, and every cell's mask probabilities made from the
    graph's mask-maker tensors, equal PyTorch's to the tolerance."""
    model, path, (images, _) = exported
    runtime = OnnxSOLO(path, threads=1)
    assert runtime.cfg == model.cfg  # the config travels in the file
    with torch.no_grad():
        parts = model.mask_makers(images)
    cate, makers = runtime.outputs(images)
    for got, want in zip(cate, parts.category_probabilities(), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=0)
    for got, want in zip(makers, parts.makers, strict=True):
        assert type(got) is type(want) and got.shape == want.shape
        torch.testing.assert_close(
            got.dense().sigmoid(), want.dense().sigmoid(), atol=TOLERANCE, rtol=0
        )
    # The batch dimension is free: one image gives that image's rows.
    one_cate, _ = runtime.outputs(images[:1])
    torch.testing.assert_close(one_cate[0], cate[0][:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["vanilla", "solov2"])
def test_vanilla_and_solov2_exports_give_pytorchs_instances(
    tmp_path, tiny_config, tiny_data_dir, kind
):
    """The graph of a kernel head ends at its features, kernels and bias, far smaller
    than every cell's mask; onnxruntime's candidates then give PyTorch's instances."""
    cfg = tiny_config.replace(channels_last=False, mask_head="vanilla", mask_threshold=0.5)
    if kind == "solov2":
        cfg = cfg.replace(head="solov2", kernel_channels=32, mask_branch_channels=32)
    model = scoring_model(cfg)
    path = export_onnx(model, tmp_path / f"{kind}.onnx")
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert [o.name for o in graph.graph.output] == output_names(cfg)
    runtime = OnnxSOLO(path, threads=1)
    data = SOLODataModule(cfg, root=str(tiny_data_dir))
    data.setup("validate")
    images, targets = next(iter(data.val_dataloader()))
    fields = {node.name: node.shape for node in runtime.session.get_outputs()}
    assert fields["masks_0_features"] == [1, 32, *cfg.mask_size(0)]
    assert fields["masks_0_kernels"] == [1, cfg.num_grids[0] ** 2, 32]
    with torch.no_grad():
        expected = model.predict(images, targets)
    got = runtime.predict(images, targets)
    assert_same_instances_as_pytorch(got, expected)


def test_the_same_instances_come_out_after_post_processing(exported):
    model, path, (images, targets) = exported
    with torch.no_grad():
        expected = model.predict(images, targets)
    got = OnnxSOLO(path, threads=1).predict(images, targets)
    assert_same_instances_as_pytorch(got, expected)


def test_an_empty_image_gives_an_empty_result(tmp_path, tiny_config, tiny_data_dir):
    """The untrained network: every category probability at the 0.01 prior, below the
    0.1 score threshold, so no candidate; the result is empty, not an error."""
    cfg = tiny_config.replace(channels_last=False)
    torch.manual_seed(0)
    path = export_onnx(SOLO(cfg).eval(), tmp_path / "plain.onnx")
    data = SOLODataModule(cfg, root=str(tiny_data_dir))
    data.setup("validate")
    images, targets = next(iter(data.val_dataloader()))
    result = OnnxSOLO(path).predict(torch.zeros_like(images[:1]), targets[:1])
    assert result[0]["masks"].shape[0] == 0 and result[0]["labels"].shape == (0,)


def test_a_fixed_batch_graph_predicts_any_number_of_images(tmp_path, exported):
    """A graph of batch 2 predicts 3 images as 2, then 1 with a zero image filling the
    batch; the instances are those of the free-batch graph. (Batch 1, the CLI's default,
    runs the batches of 2 in test_cli's ``predict --onnx`` test.)"""
    model, free_path, (images, targets) = exported
    three, metas = torch.cat([images, images[:1]]), [*targets, targets[0]]  # (3, 3, H, W)
    expected = OnnxSOLO(free_path).predict(three, metas)
    runtime = OnnxSOLO(export_onnx(model, tmp_path / "batch2.onnx", batch_size=2))
    assert runtime.batch_size == 2
    got = runtime.predict(three, metas)
    assert len(got) == 3 and sum(len(p["labels"]) for p in got) > 10
    for ours, theirs in zip(got, expected, strict=True):
        assert torch.equal(ours["labels"], theirs["labels"])
        assert torch.equal(ours["masks"], theirs["masks"])
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"3 images for a graph of batch 2"):
        runtime.outputs(three)


def test_files_that_are_not_solo_exports_are_refused_by_name(tmp_path):
    """Not ONNX; ONNX without the stored config; a stored config but other outputs."""
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"notes\.onnx: not an ONNX model"):
        OnnxSOLO(text)

    def identity_model(name: str, config: SOLOConfig | None) -> str:
        """An ONNX graph ``images -> y`` (Identity), with `config` stored if given."""
        shape = [1, 3, 96, 128]
        graph = helper.make_graph(
            [helper.make_node("Identity", ["images"], ["y"])],
            "identity",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        if config is not None:
            helper.set_model_props(model, {"solo_config": json.dumps(dataclasses.asdict(config))})
        onnx.save(model, tmp_path / name)
        return str(tmp_path / name)

    with pytest.raises(ValueError, match=r"plain\.onnx: not a SOLO export: no 'solo_config'"):
        OnnxSOLO(identity_model("plain.onnx", None))
    with pytest.raises(ValueError, match=r"other\.onnx: not a SOLO export: .*'category_0'"):
        OnnxSOLO(identity_model("other.onnx", SOLOConfig.cpu()))
    with pytest.raises(FileNotFoundError, match=r"absent\.onnx: no such file"):
        OnnxSOLO(tmp_path / "absent.onnx")


def test_images_of_another_size_are_refused(exported):
    _, path, _ = exported
    with pytest.raises(ValueError, match=r"images must be \(B, \(3, 96, 128\)\)"):
        OnnxSOLO(path).outputs(torch.zeros(1, 3, 64, 64))


def test_weights_only_checkpoint_loads_and_is_smaller(tmp_path, tiny_config):
    """A Lightning checkpoint with AdamW state (two moments per weight) against the
    weights-only one: the same network, about a third of the size."""
    import pytorch_lightning as pl

    lit = LitSOLO(tiny_config.replace(channels_last=False))
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_checkpointing=False)
    trainer.strategy.connect(lit)
    optimizer = torch.optim.AdamW(lit.parameters())
    for p in lit.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    full = {
        "state_dict": lit.state_dict(),
        "hyper_parameters": dict(lit.hparams),
        "optimizer_states": [optimizer.state_dict()],
        "pytorch-lightning_version": pl.__version__,
    }
    torch.save(full, tmp_path / "full.ckpt")
    path = save_weights(tmp_path / "full.ckpt", tmp_path / "weights.ckpt")
    assert path.stat().st_size < 0.5 * (tmp_path / "full.ckpt").stat().st_size
    loaded = LitSOLO.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    for name, value in lit.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert loaded.cfg == lit.cfg

    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(
        ValueError, match=r"bad\.ckpt is not a checkpoint written by fit \(no \['hyper"
    ):
        save_weights(tmp_path / "bad.ckpt", tmp_path / "never.ckpt")
    assert not (tmp_path / "never.ckpt").exists()


def test_export_refuses_a_missing_checkpoint_and_writes_nothing(tmp_path, capsys):
    from solo_lib.cli import main

    with pytest.raises(SystemExit):
        main(
            [
                "export",
                "--ckpt_path",
                str(tmp_path / "nope.ckpt"),
                "--output",
                str(tmp_path / "m.onnx"),
            ]
        )
    assert "nope.ckpt: no such file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("perturbation", [1e-3, float("nan")])
def test_export_with_a_broken_graph_exits_1_and_leaves_no_file(
    tmp_path, monkeypatch, capsys, tiny_config, perturbation
):
    """onnxruntime's probabilities off by `perturbation` (as a faulty exporter or runtime
    would make them): the command names the difference and the tolerance, exits with 1,
    and neither the ONNX file nor the weights (nor a temporary file) is left."""
    from solo_lib.cli import main

    torch.manual_seed(0)
    checkpoint = write_checkpoint(
        LitSOLO(tiny_config.replace(channels_last=False)), tmp_path / "m.ckpt"
    )
    outputs = OnnxSOLO.outputs

    def perturbed(self, images):
        category, makers = outputs(self, images)
        return [c + perturbation for c in category], makers

    monkeypatch.setattr(OnnxSOLO, "outputs", perturbed)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    shown = "nan" if perturbation != perturbation else "1.0e-03"
    assert f"differ from PyTorch's by up to {shown}" in err
    assert "above the tolerance 1e-04" in err and "m.onnx and its weights were not written" in err
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt"]


def test_a_free_batch_graph_of_the_cpu_preset_runs_one_and_three_images(tmp_path):
    """Traced at batch 1, torch.export specialised the cpu preset's batch (its guard
    allowed at most 2): `dynamic_batch` traces from an example of 2, and the graph then
    takes 1 and 3 images, equal to PyTorch to 1e-4."""
    torch.manual_seed(0)
    model = SOLO(SOLOConfig.cpu()).eval()
    runtime = OnnxSOLO(export_onnx(model, tmp_path / "cpu.onnx", dynamic_batch=True))
    assert runtime.batch_size is None
    images = torch.randn(3, 3, *model.cfg.image_size)
    for batch in (images[:1], images):
        category, makers = runtime.outputs(batch)
        with torch.no_grad():
            expected = model.mask_makers(batch)
        torch.testing.assert_close(category[0], expected.category[0].sigmoid(), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            makers[-1].dense().sigmoid(), expected.makers[-1].dense().sigmoid(), atol=1e-4, rtol=0
        )


def test_export_says_what_it_does_on_stderr_and_prints_the_files_alone_on_stdout(
    tmp_path, capsys, tiny_config
):
    """Issue 28: a status line on stderr before the export and before the onnxruntime
    check (each a few seconds); stdout holds the one line of results, as before."""
    from solo_lib.cli import main

    torch.manual_seed(0)
    checkpoint = write_checkpoint(
        LitSOLO(tiny_config.replace(channels_last=False)), tmp_path / "m.ckpt"
    )
    onnx_file, weights = tmp_path / "m.onnx", tmp_path / "m.weights.ckpt"
    main(["export", "--ckpt_path", str(checkpoint), "--output", str(onnx_file)])
    out, err = capsys.readouterr()
    assert re.fullmatch(
        rf"wrote {re.escape(str(onnx_file))} \(\d+\.\d MB\) and {re.escape(str(weights))} "
        r"\(\d+\.\d MB\); onnxruntime against PyTorch on a random image: largest difference "
        r"\d\.\de[-+]\d\d \(tolerance 1e-04\)\n",
        out,
    )
    lines = err.splitlines()
    exporting = (
        f"export: writing the network of {checkpoint} (tiny, input 96x128, batch 1) as ONNX "
        "with torch.onnx (dynamo)"
    )
    checking = (
        f"export: checking {onnx_file} with onnxruntime against PyTorch on a random image "
        "(tolerance 1e-04)"
    )
    assert exporting in lines and checking in lines
    assert lines.index(exporting) < lines.index(checking)
