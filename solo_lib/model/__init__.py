"""The SOLO network: ResNet-FPN backbone and the shared head (SOLO's or SOLOv2's)."""

from solo_lib.model.backbone import build_backbone
from solo_lib.model.solo import SOLO, SOLOOutput, SOLOParts

__all__ = ["SOLO", "SOLOOutput", "SOLOParts", "build_backbone"]
