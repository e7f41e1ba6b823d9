"""Per-pixel loss weights of ``--loss amodal-balanced``: more weight on objects the more they are hidden.

After "Learning to Generate Multiple Objects from Dense and Occluded Layouts" (AIBL): a plain
denoising loss is dominated by large, unoccluded objects, and the small visible remains of a heavily
occluded object hardly count. With ``V_k(p)`` the share of latent pixel ``p`` covered by object k's
visible mask, ``r_k`` its visibility ratio (visible / amodal pixels) and ``W`` the strength::

    w(p) = 1 + W * max_k V_k(p) * (1 - r_k)
    weight(p) = w(p) / mean_p w(p)

so a fully visible object and the background keep weight 1 before normalisation, and the visible part of
an object that is 90% hidden gets 1 + 0.9 W. Dividing by the mean keeps the loss on the scale of the
plain flow loss, so the learning rate means the same with either loss.
"""

from __future__ import annotations

import torch


def amodal_balanced_weights(visible: torch.Tensor, visibility: torch.Tensor, strength: float) -> torch.Tensor:
    """[h, w] weights from visible-mask coverage [boxes, h, w] (0..1) and visibility ratios [boxes]."""
    visible = visible.float()
    height, width = visible.shape[-2:]
    if visible.shape[0] == 0:
        return torch.ones(height, width)
    occlusion = (1.0 - visibility.float()).clamp(0.0, 1.0)
    boost = (visible.clamp(0.0, 1.0) * occlusion[:, None, None]).amax(dim=0)
    weights = 1.0 + float(strength) * boost
    return weights / weights.mean()
