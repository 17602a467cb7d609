"""The SOLO network: shapes per level for both presets, strides, heads' init, backbone weights."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from solo_lib.config import SOLOConfig
from solo_lib.data import ImageGeometry
from solo_lib.model import SOLO, SOLOOutput, build_backbone
from solo_lib.model.backbone import BASIC_BLOCKS, narrow_resnet
from solo_lib.model.heads import coord_features
from solo_lib.model.mask_makers import logit_from_log_prob


class _Options:
    """A pickled object outside torch's weights_only allow-list."""


def _check_output_shapes(output: SOLOOutput, cfg: SOLOConfig, batch: int) -> None:
    assert len(output.category) == len(output.masks) == cfg.num_levels
    for level, s in enumerate(cfg.num_grids):
        assert output.category[level].shape == (batch, cfg.num_classes, s, s)
        assert output.masks[level].shape == (batch, s * s, *cfg.mask_size(level))


def test_cpu_preset_output_shapes() -> None:
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu()
    model = SOLO(cfg)
    output = model(torch.randn(2, 3, *cfg.image_size))
    _check_output_shapes(output, cfg, batch=2)
    assert all(torch.isfinite(x).all() for x in output.category + output.masks)


def test_paper_preset_output_shapes_at_800x1088() -> None:
    """The paper's input size, grids and ResNet-50; narrower heads keep the test fast."""
    torch.manual_seed(0)
    cfg = SOLOConfig.paper().replace(fpn_channels=64, head_channels=64, num_stacked_convs=1)
    model = SOLO(cfg).eval()
    images = torch.randn(1, 3, *cfg.image_size)
    with torch.no_grad():
        features = model.backbone(images)
        output = model(images)
    # The SOLO paper's feature sizes at 800 x 1088: 100x136, 100x136, 50x68, 25x34, 25x34.
    assert [tuple(f.shape[-2:]) for f in features] == [
        (100, 136),
        (100, 136),
        (50, 68),
        (25, 34),
        (25, 34),
    ]
    _check_output_shapes(output, cfg, batch=1)
    assert output.masks[0].shape == (1, 1600, 200, 272)


def test_paper_preset_parameter_counts() -> None:
    model = SOLO(SOLOConfig.paper())
    trunk = sum(p.numel() for p in model.backbone.fpn.body.parameters())
    assert trunk == 23_508_032  # torchvision's ResNet-50 (25,557,032) without its fc layer
    assert len(model.head.mask_out) == 5
    assert model.head.mask_out[0].out_channels == 40 * 40


@pytest.mark.parametrize("image_size", [(256, 352), (224, 320), (160, 128)])
@pytest.mark.parametrize("strides", [(8, 8, 16, 32, 32), (4, 4, 8, 16, 16)])
def test_backbone_strides_match_config(image_size: tuple[int, int], strides) -> None:
    cfg = SOLOConfig.cpu().replace(image_size=image_size, strides=strides)
    backbone = build_backbone(cfg)
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, *image_size))
    assert [f.shape[1] for f in features] == [cfg.fpn_channels] * 5
    assert [tuple(f.shape[-2:]) for f in features] == [cfg.feature_size(i) for i in range(5)]


def test_paper_levels_are_restrided_as_in_solo() -> None:
    """Level 0 is P2 halved to stride 8, levels 1-3 are P3-P5 as they are, level 4 is P6 doubled."""
    cfg = SOLOConfig.paper().replace(image_size=(256, 320), fpn_channels=32)
    backbone = build_backbone(cfg).eval()
    images = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        pyramid = list(backbone.fpn(images).values())
        levels = backbone(images)
    for level in (1, 2, 3):
        assert torch.equal(levels[level], pyramid[level])
    assert levels[0].shape[-2:] == pyramid[1].shape[-2:]
    assert levels[4].shape[-2:] == pyramid[3].shape[-2:]


def test_coord_features_span_minus_one_to_one() -> None:
    feature = torch.zeros(2, 7, 5, 9)
    coords = coord_features(feature)
    assert coords.shape == (2, 2, 5, 9)
    x, y = coords[0]
    assert coords.min() == -1 and coords.max() == 1
    assert torch.equal(x[:, 0], torch.full((5,), -1.0)) and torch.equal(x[:, -1], torch.ones(5))
    assert torch.equal(y[0], torch.full((9,), -1.0)) and torch.equal(y[-1], torch.ones(9))
    assert (x.diff(dim=1) > 0).all() and (x.diff(dim=0) == 0).all()  # x varies along the width
    assert (y.diff(dim=0) > 0).all() and (y.diff(dim=1) == 0).all()  # y along the height


def test_category_and_mask_biases_start_at_the_prior() -> None:
    """Both outputs start at p = 0.01 (bias -4.595), as mmdetection's SOLOHead (bias_prob 0.01)."""
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu().replace(mask_head="vanilla")
    model = SOLO(cfg)
    prior = -math.log(0.99 / 0.01)
    assert abs(prior - (-4.595)) < 1e-3
    biases = [model.head.cate_out.bias] + [conv.bias for conv in model.head.mask_out]
    assert len(biases) == 1 + cfg.num_levels
    for bias in biases:
        assert torch.allclose(bias, torch.full_like(bias, prior))
    with torch.no_grad():
        output = model(torch.randn(1, 3, *cfg.image_size))
    for logits in (output.category, output.masks):
        probs = torch.cat([x.sigmoid().flatten() for x in logits])
        assert abs(probs.mean().item() - 0.01) < 0.003


def test_all_parameters_trainable_and_batchnorm_not_frozen() -> None:
    torch.manual_seed(0)
    cfg = SOLOConfig.cpu()
    model = SOLO(cfg)
    modules = list(model.modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in modules)
    batchnorms = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
    assert len(batchnorms) == 12  # ResNet-10: stem + 2 per block x 4 + 3 downsample
    assert all(p.requires_grad for p in model.parameters())
    before = batchnorms[0].running_mean.clone()
    model.train()(torch.randn(2, 3, *cfg.image_size) * 3 + 1)
    assert not torch.equal(before, batchnorms[0].running_mean)  # statistics are learned


def test_pretrained_local_state_dict_is_loaded(tmp_path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.resnet18()
    nn.init.normal_(source.conv1.weight)  # distinct from any default initialisation
    source.layer4[1].bn2.running_var.fill_(3.0)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    backbone = build_backbone(
        SOLOConfig.cpu().replace(backbone_width=64, backbone_depth=18, pretrained=str(path))
    )
    body = backbone.fpn.body
    assert torch.equal(body.conv1.weight, source.conv1.weight)
    assert torch.equal(body.layer3[0].conv2.weight, source.layer3[0].conv2.weight)
    assert torch.equal(body.layer4[1].bn2.running_var, torch.full((512,), 3.0))
    assert all(p.requires_grad for p in backbone.parameters())


def test_pretrained_file_is_loaded_weights_only(tmp_path) -> None:
    """A file that needs arbitrary unpickling (here: a plain Python object) is refused."""
    path = tmp_path / "not_weights.pth"
    torch.save({"conv1.weight": torch.zeros(1), "options": _Options()}, path)
    with pytest.raises(ValueError, match="weights_only=True") as info:
        build_backbone(SOLOConfig.cpu().replace(backbone_width=64, pretrained=str(path)))
    assert str(path) in str(info.value)


def test_pretrained_file_of_wrong_depth_or_missing_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ValueError, match="backbone_depth"):
        build_backbone(SOLOConfig.cpu().replace(backbone_width=64, pretrained=str(path)))
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        build_backbone(
            SOLOConfig.cpu().replace(backbone_width=64, pretrained=str(tmp_path / "no_such.pth"))
        )


def test_imagenet_offline_gives_short_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as info:
        build_backbone(
            SOLOConfig.cpu().replace(backbone_width=64, backbone_depth=18, pretrained="imagenet")
        )
    message = str(info.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in message
    assert "no network" in message and "local" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert len(info.traceback) <= 4  # no torch.hub / urllib frames in the report


def test_unknown_depth_is_rejected() -> None:
    with pytest.raises(ValueError, match="backbone_depth"):
        build_backbone(SOLOConfig.cpu().replace(backbone_width=64, backbone_depth=42))


def test_predict_post_processes_probabilities_and_restores_mode() -> None:
    torch.manual_seed(0)
    # Untrained, category and mask outputs sit at the prior 0.01; update_threshold keeps the
    # low scores (prior x maskness, about 1e-4) after Matrix NMS.
    cfg = SOLOConfig.cpu().replace(backbone_width=64, image_size=(128, 160), update_threshold=1e-6)
    model = SOLO(cfg).train()
    images = torch.randn(2, 3, *cfg.image_size)
    metas = [
        {"geometry": ImageGeometry((96, 128), (128, 160), (120, 160))}  # 4 rows above, below
    ] * 2
    # Untrained, every cell scores about the prior 0.01: nothing passes the default 0.1.
    assert [len(r["scores"]) for r in model.predict(images, metas)] == [0, 0]
    assert model.training
    results = model.predict(images, metas, score_threshold=0.005, mask_threshold=0.005)
    assert len(results) == 2 and len(results[0]["scores"]) > 0
    for result in results:
        n = len(result["scores"])
        assert result["masks"].shape == (n, 96, 128) and result["masks"].dtype == torch.bool
        assert result["labels"].dtype == torch.int64
        assert ((result["labels"] >= 1) & (result["labels"] <= cfg.num_classes)).all()
        assert (result["scores"] <= 1).all()


def test_resnet10_has_no_imagenet_weights_and_says_so() -> None:
    with pytest.raises(ValueError, match="no ImageNet weights for ResNet-10"):
        build_backbone(
            SOLOConfig.cpu().replace(backbone_width=64, backbone_depth=10, pretrained="imagenet")
        )


@pytest.mark.parametrize("depth, blocks", [(10, [1, 1, 1, 1]), (18, [2, 2, 2, 2])])
def test_narrow_resnet_at_width_64_is_torchvisions_resnet(depth, blocks) -> None:
    """torchvision's ResNet is the oracle: the same layers, names and shapes, at width 64."""
    ours = narrow_resnet(64, BASIC_BLOCKS[depth]).state_dict()
    theirs = ResNet(BasicBlock, blocks).state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_narrow_backbone_halves_every_stage() -> None:
    cfg = SOLOConfig.cpu().replace(backbone_width=32)
    trunk = build_backbone(cfg).fpn.body
    widths = [trunk[f"layer{i}"][-1].conv2.out_channels for i in range(1, 5)]
    assert widths == [32, 64, 128, 256]
    features = build_backbone(cfg)(torch.randn(1, 3, *cfg.image_size))
    assert [tuple(f.shape[1:]) for f in features] == [
        (cfg.fpn_channels, *cfg.feature_size(level)) for level in range(cfg.num_levels)
    ]


def test_narrow_backbone_refuses_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="backbone_width 32 needs a ResNet trained from scratch"):
        build_backbone(SOLOConfig.cpu().replace(backbone_width=32, pretrained="imagenet"))


def test_channels_last_changes_the_layout_not_the_outputs() -> None:
    cfg = SOLOConfig.cpu().replace(image_size=(128, 160), channels_last=False)
    torch.manual_seed(0)
    plain = SOLO(cfg).eval()
    fast = SOLO(cfg.replace(channels_last=True)).eval()
    fast.load_state_dict(plain.state_dict())
    conv = fast.backbone.fpn.body.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, *cfg.image_size)
    with torch.no_grad():
        a, b = plain(images), fast(images)
    for x, y in zip(a.category + a.masks, b.category + b.masks, strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def _random_mask_model(mask_head: str, **changes) -> tuple[SOLO, SOLOConfig]:
    """A cpu-preset SOLO at 128 x 160 whose final mask convs (S^2 channels, or X and Y)
    have random weights and biases, so that every channel differs."""
    cfg = SOLOConfig.cpu().replace(image_size=(128, 160), mask_head=mask_head, **changes)
    torch.manual_seed(0)
    model = SOLO(cfg)
    head = model.head
    convs = [*head.mask_out_x, *head.mask_out_y] if head.decoupled else list(head.mask_out)
    with torch.no_grad():
        for conv in convs:
            conv.weight.normal_(0, 0.5)
            conv.bias.normal_(0, 1.0)
    return model, cfg


def test_masks_are_the_papers_upsampled_logits() -> None:
    """Upsampling the head's E features before the 1x1 conv = the paper's upsampled S^2 logits."""
    model, cfg = _random_mask_model("vanilla", channels_last=False)
    model.eval()
    head = model.head
    with torch.no_grad():
        features = model.backbone(torch.randn(2, 3, *cfg.image_size))
        _, masks = head(features)
        for level, feature in enumerate(features):
            stacked = head.mask_convs(torch.cat([feature, coord_features(feature)], dim=1))
            logits = head.mask_out[level](stacked)  # (B, S^2, H_f, W_f), then x2 as in the paper
            paper = nn.functional.interpolate(logits, scale_factor=2, mode="bilinear")
            torch.testing.assert_close(masks[level], paper, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mask_head", ["vanilla", "decoupled"])
def test_active_masks_equal_the_dense_masks_at_those_cells_with_their_gradients(
    mask_head: str,
) -> None:
    model, cfg = _random_mask_model(mask_head)
    images = torch.randn(3, 3, *cfg.image_size)
    generator = torch.Generator().manual_seed(1)
    active = [torch.rand(3, s * s, generator=generator) < 0.1 for s in cfg.num_grids]
    active[1][1] = False  # an image with no active cell on a level
    dense = model(images).masks
    sparse = model(images, active).masks
    for level, (d, a) in enumerate(zip(dense, active, strict=True)):
        assert sparse[level].shape == (int(a.sum()), *cfg.mask_size(level))
        torch.testing.assert_close(sparse[level], d[a], atol=1e-4, rtol=1e-4)
    head = model.head
    weight = head.mask_out_x[0].weight if head.decoupled else head.mask_out[0].weight
    (grad_dense,) = torch.autograd.grad(dense[0][active[0]].sum(), weight)
    (grad_sparse,) = torch.autograd.grad(sparse[0].sum(), weight)
    torch.testing.assert_close(grad_sparse, grad_dense, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match=r"active must be \(B, S\^2\)"):
        model(images, [a[:2] for a in active])


def test_decoupled_mask_of_cell_row_i_column_j_is_sigmoid_x_j_times_sigmoid_y_i() -> None:
    """The paper's Decoupled SOLO, computed by hand from the two branches' outputs."""
    model, cfg = _random_mask_model("decoupled")
    model.eval()
    head = model.head
    with torch.no_grad():
        features = model.backbone(torch.randn(2, 3, *cfg.image_size))
        _, masks = head(features)
        for level, (feature, s) in enumerate(zip(features, cfg.num_grids, strict=True)):
            x_coord, y_coord = coord_features(feature).split(1, dim=1)
            x = head.mask_out_x[level](head.mask_convs_x(torch.cat([feature, x_coord], 1)))
            y = head.mask_out_y[level](head.mask_convs_y(torch.cat([feature, y_coord], 1)))
            x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear").sigmoid()
            y = nn.functional.interpolate(y, scale_factor=2, mode="bilinear").sigmoid()
            assert masks[level].shape == (2, s * s, *cfg.mask_size(level))
            for row, col in [(0, 0), (0, s - 1), (s - 1, 1), (s // 2, s // 3)]:
                expected = x[:, col] * y[:, row]  # (B, h, w)
                got = masks[level][:, row * s + col].sigmoid()
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_decoupled_masks_start_at_the_prior() -> None:
    """Each factor starts at p = 0.1 (bias -2.197), so that their product starts at 0.01."""
    cfg = SOLOConfig.cpu().replace(mask_head="decoupled")
    torch.manual_seed(0)
    model = SOLO(cfg)
    for conv in [*model.head.mask_out_x, *model.head.mask_out_y]:
        assert torch.allclose(conv.bias, torch.full_like(conv.bias, -math.log(0.9 / 0.1)))
    with torch.no_grad():
        masks = model(torch.randn(1, 3, *cfg.image_size)).masks
    probs = torch.cat([m.sigmoid().flatten() for m in masks])
    assert abs(probs.mean().item() - 0.01) < 0.002


def test_logit_from_log_prob_inverts_the_sigmoid_and_stays_finite_at_certainty() -> None:
    p = torch.tensor([1e-30, 1e-4, 0.5, 0.9, 1 - 1e-4], dtype=torch.float64)
    logits = logit_from_log_prob(p.log())
    torch.testing.assert_close(logits.sigmoid(), p, rtol=1e-6, atol=0)
    log_p = torch.zeros(2, requires_grad=True)  # p = 1: log p = 0, logit clamped
    logits = logit_from_log_prob(log_p)
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(log_p.grad).all()
    assert abs(logits[0].item() - math.log(1e6)) < 1e-3


def test_unknown_mask_head_is_refused() -> None:
    with pytest.raises(ValueError, match="mask_head must be 'vanilla' or 'decoupled'"):
        SOLOConfig.cpu().replace(mask_head="dynamic")
