"""Is the rendering alive? Scale and shape of what the top-down pass produces, per step.

A rendering no better than a blank image is either at the wrong scale (its norm far from the
image's: sigma^2 and the rendered templates z^(l) tell where the scale is lost) or of the wrong
shape (small cosine between I and I_hat). These numbers are logged every N training steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def render_diagnostics(
    images: Tensor, rendered: Tensor, templates: Sequence[Tensor]
) -> dict[str, Tensor]:
    """render/cosine: mean cosine between each image and its rendering (input units);
    render/norm_ratio: mean ||I_hat|| / ||I||; render/z<l>_rms: root mean square of each
    rendered template z^(l), l = L ... 1 (top first)."""
    flat_x, flat_r = images.flatten(1).float(), rendered.flatten(1).float()
    out = {
        "render/cosine": F.cosine_similarity(flat_x, flat_r, dim=1, eps=1e-12).mean(),
        "render/norm_ratio": (flat_r.norm(dim=1) / flat_x.norm(dim=1).clamp_min(1e-12)).mean(),
    }
    top = len(templates)
    for i, z in enumerate(templates):
        out[f"render/z{top - i}_rms"] = z.float().pow(2).mean().sqrt()
    return out
