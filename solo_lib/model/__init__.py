"""The SOLO network: ResNet-FPN backbone and the shared category / mask head."""

from solo_lib.model.backbone import build_backbone
from solo_lib.model.solo import SOLO, SOLOOutput

__all__ = ["SOLO", "SOLOOutput", "build_backbone"]
