"""The whole path agrees with itself: a model that memorises four images finds their objects.

Targets, losses, post-processing and evaluation each have their own tests; this one
checks that they fit together (label offsets, flattening orders, coordinate frames):
after overfitting a fixed batch, the post-processed predictions on that batch must
reach a high mask AP50 against its ground truth at the original image size.
"""

import torch

from solo_lib.data import CIS680Dataset, collate
from solo_lib.evaluation import MaskEvaluator
from solo_lib.losses import solo_loss
from solo_lib.model import SOLO
from solo_lib.postprocess import postprocess
from solo_lib.targets import build_batch_targets


def test_memorised_batch_is_found_again_with_high_mask_ap(tiny_config, tiny_data_dir):
    torch.manual_seed(0)
    cfg = tiny_config.replace(
        image_size=(128, 160), fpn_channels=64, head_channels=64, strides=(4, 4, 8, 16, 16)
    )
    dataset = CIS680Dataset(tiny_data_dir, cfg, train=False)
    images, targets = collate([dataset[i] for i in range(4)])
    level_targets = build_batch_targets(targets, cfg)
    model = SOLO(cfg).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(150):
        losses = solo_loss(model(images), level_targets, cfg)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()

    # BatchNorm in train mode: the statistics of this very batch, as during the fit.
    with torch.no_grad():
        output = model(images)
    predictions = postprocess(
        [c.sigmoid() for c in output.category], [m.sigmoid() for m in output.masks], targets, cfg
    )
    evaluator = MaskEvaluator(cfg.class_names)
    evaluator.update(predictions, [t["original"] for t in targets])
    result = evaluator.compute()
    assert result["AP50"] > 0.5, (result["AP50"], losses)
