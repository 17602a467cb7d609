"""ResNet + FPN backbone, re-strided to SOLO's five levels (strides 8, 8, 16, 32, 32).

torchvision's FPN gives P2..P6 at strides 4, 8, 16, 32, 64. SOLO (like mmdetection)
halves P2 to stride 8 and brings the max-pooled P6 back up to P5's size, so the
finest grid (S = 40) never works on a stride-4 map and the coarsest level still
sees a 25 x 34 map at 800 x 1088. In general level l is P(l+2) resized
(bilinear) to stride ``cfg.strides[l]``; both presets use SOLO's strides.

Normalisation: every BatchNorm is a plain, trainable ``nn.BatchNorm2d``. torchvision's
``resnet_fpn_backbone`` defaults to ``FrozenBatchNorm2d`` with its statistics fixed
at 0 mean / 1 variance: right for ImageNet weights, wrong from scratch (the
normalisation would never learn). With pretrained weights the BatchNorm layers
start from the ImageNet statistics and stay trainable too; at 8-16 images per
device the batch statistics are stable enough for that.
"""

from __future__ import annotations

import math
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from solo_lib.config import SOLOConfig

#: Blocks per stage of the ResNets built here rather than by torchvision (basic blocks).
BASIC_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

#: ResNet depths, with the name of their ImageNet weights enum in torchvision (None: no
#: weights). ResNet-10 is ResNet-18 with one basic block per stage instead of two: half
#: the trunk's convolutions, for CPU training from scratch.
RESNET_WEIGHTS = {
    10: None,
    18: "ResNet18_Weights",
    34: "ResNet34_Weights",
    50: "ResNet50_Weights",
    101: "ResNet101_Weights",
    152: "ResNet152_Weights",
}


class SOLOBackbone(nn.Module):
    """ResNet + FPN returning SOLO's five feature maps, each ``fpn_channels`` wide.

    ``forward(images (B, 3, H, W))`` returns a list of 5 tensors of shape
    ``(B, fpn_channels, *cfg.feature_size(level))``: level l is P(l+2) resized to
    stride ``strides[l]`` (SOLO's 8, 8, 16, 32, 32 by default).
    """

    def __init__(
        self,
        resnet: nn.Module,
        fpn_channels: int,
        strides: tuple[int, ...] = (8, 8, 16, 32, 32),
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        # layer1..layer4 each double the width; after construction `inplanes` holds
        # layer4's (torchvision's ResNet and `narrow_resnet` alike).
        in_channels = [resnet.inplanes // 8 * 2**i for i in range(4)]
        self.fpn = BackboneWithFPN(
            resnet,
            return_layers={f"layer{i + 1}": str(i) for i in range(4)},
            in_channels_list=in_channels,
            out_channels=fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        self.out_channels = fpn_channels

    def forward(self, images: Tensor) -> list[Tensor]:
        pyramid = list(self.fpn(images).values())  # P2..P6 at strides 4, 8, 16, 32, 64
        height, width = images.shape[-2:]
        levels = []
        for feature, stride in zip(pyramid, self.strides, strict=True):
            size = (math.ceil(height / stride), math.ceil(width / stride))
            if tuple(feature.shape[-2:]) != size:
                feature = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
            levels.append(feature)
        return levels


def build_backbone(cfg: SOLOConfig) -> SOLOBackbone:
    """The ResNet-``cfg.backbone_depth`` FPN of ``cfg``, loaded with ``cfg.pretrained``.

    ``cfg.backbone_depth`` is 10 (no ImageNet weights), 18, 34, 50, 101 or 152.
    ``cfg.pretrained`` is None (random init), ``"imagenet"`` (torchvision's
    IMAGENET1K_V1 weights, from the torch hub cache or downloaded) or the path of
    a ResNet state dict (torchvision key names; the ``fc.*`` classifier keys may
    be missing). All parameters are trainable.
    """
    if cfg.backbone_depth not in RESNET_WEIGHTS:
        raise ValueError(
            f"backbone_depth must be one of {sorted(RESNET_WEIGHTS)}, got {cfg.backbone_depth}"
        )
    if cfg.backbone_width != 64:
        if cfg.backbone_depth not in BASIC_BLOCKS or cfg.pretrained is not None:
            raise ValueError(
                f"backbone_width {cfg.backbone_width} needs a ResNet trained from scratch "
                f"(pretrained None) of depth {sorted(BASIC_BLOCKS)}; got depth "
                f"{cfg.backbone_depth}, pretrained {cfg.pretrained!r}"
            )
        resnet = narrow_resnet(cfg.backbone_width, BASIC_BLOCKS[cfg.backbone_depth])
    elif cfg.pretrained == "imagenet":
        resnet = _imagenet_resnet(cfg.backbone_depth)
    else:
        if cfg.backbone_depth == 10:
            resnet = ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=nn.BatchNorm2d)
        else:
            builder = getattr(torchvision.models, f"resnet{cfg.backbone_depth}")
            resnet = builder(weights=None, norm_layer=nn.BatchNorm2d)
        if cfg.pretrained is not None:
            load_resnet_state_dict(resnet, cfg.pretrained)
    return SOLOBackbone(resnet, cfg.fpn_channels, cfg.strides)


def narrow_resnet(width: int, blocks: tuple[int, ...]) -> nn.Sequential:
    """A ResNet trunk of basic blocks whose stages are `width`, 2, 4 and 8 x `width` wide.

    torchvision's ResNet is fixed at 64, 128, 256, 512 channels; at 32 the convolutions
    cost a quarter of that, which is what a 20-minute CPU run needs more than ImageNet
    capacity. Built from torchvision's `BasicBlock`, with torchvision's layer names
    (conv1, bn1, relu, maxpool, layer1..layer4), so `BackboneWithFPN` takes it as it is.
    The classifier is left out; `inplanes` holds layer4's width, as in torchvision.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(width),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    inplanes = width
    for stage, count in enumerate(blocks):
        planes, stride = width * 2**stage, 1 if stage == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        stage_blocks = [BasicBlock(inplanes, planes, stride, downsample)]
        stage_blocks += [BasicBlock(planes, planes) for _ in range(count - 1)]
        layers[f"layer{stage + 1}"] = nn.Sequential(*stage_blocks)
        inplanes = planes
    trunk = nn.Sequential(layers)
    trunk.inplanes = inplanes
    for module in trunk.modules():  # torchvision's ResNet initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return trunk


def _imagenet_resnet(depth: int) -> torchvision.models.ResNet:
    """A ResNet with torchvision's ImageNet weights; a short, clear error when offline."""
    if RESNET_WEIGHTS[depth] is None:
        raise ValueError(
            f"pretrained='imagenet': torchvision has no ImageNet weights for ResNet-{depth}; "
            "use backbone_depth 18 or more, a local state dict, or None"
        )
    weights = getattr(torchvision.models, RESNET_WEIGHTS[depth]).IMAGENET1K_V1
    builder = getattr(torchvision.models, f"resnet{depth}")
    try:
        return builder(weights=weights, progress=False, norm_layer=nn.BatchNorm2d)
    except OSError as err:  # urllib's URLError is an OSError
        cached = (
            Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
        )
        reason = getattr(err, "reason", err)
        raise RuntimeError(
            f"pretrained='imagenet': could not download the ResNet-{depth} weights ({reason}). "
            f"Offline, copy {weights.url} to {cached}, or set pretrained to the path of a "
            "local ResNet state dict (or None to train from scratch)."
        ) from None


def load_resnet_state_dict(resnet: torchvision.models.ResNet, path: str | os.PathLike) -> None:
    """Load a ResNet state dict from ``path`` into ``resnet`` (tensors only: ``weights_only``).

    ``weights_only=True`` refuses files that would run arbitrary code when unpickled.
    Missing ``fc.*`` keys are accepted (the classifier is not used); any other
    missing or unexpected key is an error that names the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained: no file {path}; expected None, 'imagenet' or the path of a "
            "ResNet state dict saved with torch.save(model.state_dict(), path)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path}: cannot be loaded with torch.load(weights_only=True) ({first_line}); "
            "expected a plain state dict of tensors"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of name -> tensor, got {type(state).__name__}")
    try:
        missing, unexpected = resnet.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches, e.g. a ResNet-50 file for a ResNet-18
        detail = next((line.strip() for line in str(err).splitlines() if "mismatch" in line), "")
        raise ValueError(
            f"{path}: does not fit a ResNet of this depth ({detail}); check backbone_depth"
        ) from None
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a state dict of this ResNet: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]} (check backbone_depth)"
        )
