"""What a trained model's layers hold for a linear probe (paper Fig. 2, left): the image, every
layer's activations I^(l) after its block (Eq. 9), and its switches, the inferred nuisances a
(ReLU, Eq. 42) and t (max-pool, Eq. 43), one flat feature matrix each.

The switches come from the same bottom-up pass for every member of the family, so a CNN
trained without the rendering (objective=dcn) has them too: what its ReLUs and max-pools chose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import DRMM
from ..models.sampling import window_positions

SOURCES = ("hidden", "a", "t")  # activations, ReLU switches, max-pool switches


def feature_names(model: DRMM, sources: Iterable[str] = SOURCES) -> list[str]:
    """The feature sets probed, bottom to top: image (layer 0), layer1..L (activations), a1..aL
    (ReLU switches), t<l> for the layers that max-pool."""
    sources = check_sources(sources)
    names = ["image"] if "hidden" in sources else []
    for i, layer in enumerate(model.rendering_layers, start=1):
        names += [f"layer{i}"] if "hidden" in sources else []
        names += [f"a{i}"] if "a" in sources else []
        names += [f"t{i}"] if "t" in sources and layer.spec.pool == "max" else []
    return names


def check_sources(sources: Iterable[str]) -> tuple[str, ...]:
    """`sources` as a tuple, a ValueError naming any unknown one."""
    sources = tuple(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"probe sources {list(sources)}: pick one or more of {list(SOURCES)}.")
    return sources


@torch.no_grad()
def layer_features(
    model: DRMM,
    images: Tensor,
    sources: Iterable[str] = SOURCES,
    batch_size: int = 500,
    progress: Callable[[Iterable[Tensor]], Iterable[Tensor]] = lambda batches: batches,
) -> dict[str, Tensor]:
    """{feature set name: (N, D) float32} for preprocessed `images` (N, C, H, W), in
    feature_names' order. a is 0/1; t is one-hot over the 4 positions of each 2x2 window (the
    linear encoding of a categorical switch). `progress` wraps the batches (e.g. tqdm)."""
    names = feature_names(model, sources)
    chunks: dict[str, list[Tensor]] = {name: [] for name in names}
    layers = model.rendering_layers
    device = model.log_sigma2.device
    for x in progress(images.split(batch_size)):
        x = x.to(device, torch.float32)
        hidden, switches = model.bottom_up(x)
        found = {"image": x}
        for i, (h, sw) in enumerate(zip(hidden, switches), start=1):
            found[f"layer{i}"], found[f"a{i}"] = h, sw.a
            if f"t{i}" in chunks and sw.t is not None:  # only if asked: the widest set
                found[f"t{i}"] = F.one_hot(window_positions(sw.t, layers[i - 1].conv_size), 4)
        for name in names:  # flattened and converted only for the sets asked for
            chunks[name].append(found[name].flatten(1).float().cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}
