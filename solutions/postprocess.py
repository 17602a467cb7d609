"""Reference solutions of notebook 05's exercises: points NMS, Matrix NMS, masks back to the original."""

import torch
import torch.nn.functional as F


def my_points_nms(heat: torch.Tensor) -> torch.Tensor:
    """Keep each value of heat (B, C, S, S) that is the maximum of its 2x2 window
    (cells i-1..i, j-1..j); set the others to 0."""
    # Padding 1 and kernel 2 give an (S + 1, S + 1) map; its top-left S x S part is the
    # maximum over each cell and its upper, left and upper-left neighbours.
    window_max = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[:, :, :-1, :-1]
    return heat * (window_max == heat)


def my_matrix_nms(
    masks: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, kernel: str, sigma: float
) -> torch.Tensor:
    """Matrix NMS: masks (N, H, W) bool, labels (N,), scores (N,) -> decayed scores (N,)."""
    if len(scores) == 0:
        return scores.clone()  # an image without candidates: nothing to decay
    order = scores.argsort(descending=True)  # work in score order, answer in input order
    m = masks[order].flatten(1).float()  # (N, H * W)
    inter = m @ m.T
    area = m.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1)
    same = labels[order][:, None] == labels[order][None, :]
    iou = (iou * same).triu(diagonal=1)  # iou[i, j]: higher i, lower j, same class
    comp = iou.max(dim=0).values[:, None]  # comp[i]: how much i itself is suppressed
    if kernel == "gaussian":
        decay = torch.exp(-sigma * iou**2) / torch.exp(-sigma * comp**2)
    else:
        decay = (1 - iou) / (1 - comp).clamp(min=1e-6)
    decayed = torch.empty_like(scores)
    decayed[order] = scores[order] * decay.min(dim=0).values  # the strongest decay of each j
    return decayed


def my_masks_to_original(maps: torch.Tensor, geometry) -> torch.Tensor:
    """Soft masks (n, h, w) over the input frame -> (n, H0, W0) over the original image."""

    if maps.shape[0] == 0:  # an image without detections
        return maps.new_zeros((0, *geometry.orig_size))

    def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False)[0]

    full = resize(maps, geometry.input_size)  # (n, H, W): the whole padded input
    x1, y1, x2, y2 = geometry.content_box  # the image inside it, centred in the padding
    content = full[:, y1:y2, x1:x2]  # (n, h, w)
    if geometry.flipped:
        content = content.flip(-1)  # undo the mirror of the training augmentation
    return resize(content, geometry.orig_size)  # (n, H0, W0)
