"""The model family by name: RFM, 2-layer DRFM, 2/5/9-layer DRMM (paper Appendix I).

The paper says only that the RFM and DRFM are "similar to LeNet5 and its variants" and the 5- and
9-layer DRMMs "similar to Conv-Small and Conv-Large" (Appendix I). Where it gives no layer list we
choose one and say so below; each works on 1x28x28 and 3x32x32 inputs.
"""

from __future__ import annotations

from collections.abc import Callable

from .drmm import DRMM
from .factor import DRFM
from .layer import LayerSpec

# (out_channels, kernel, padding, pool) per layer, bottom to top.
Layers = list[tuple[int, int, str, str]]

# Conv-Small of the Ladder network (Rasmus et al. 2015, CuriousAI/ladder README), the paper's
# 5-layer DRMM: 32 5x5 full, max, 64 3x3 valid, 64 3x3 full, max, 128 3x3 valid, 10 1x1, mean.
CONV_SMALL: Layers = [
    (32, 5, "full", "max"),
    (64, 3, "valid", "none"),
    (64, 3, "full", "max"),
    (128, 3, "valid", "none"),
    (10, 1, "valid", "mean"),
]

# Conv-Small with the head of the authors' later NRM code (DGM/mnist/lenet_ld_opt.py): the
# 10-channel 1x1 layer is dropped and the class templates live on the 128 mean-pooled channels.
# Not in the paper; offered because the 10-channel ReLU bottleneck starves the templates with
# few labels (docs/results.md, "Table 1 at N_L = 100").
CONV_SMALL_NRM: Layers = [*CONV_SMALL[:3], (128, 3, "valid", "mean")]

# Conv-Large, the paper's 9-layer DRMM for CIFAR-10, as read from the authors' TF port harness
# (drmm-tensorflow): first conv 'same' so a 32x32 input ends in the 6x6 map of the harness.
CONV_LARGE: Layers = [
    (96, 3, "same", "none"),
    (96, 3, "full", "none"),
    (96, 3, "full", "max"),
    (192, 3, "valid", "none"),
    (192, 3, "full", "none"),
    (192, 3, "valid", "max"),
    (192, 3, "valid", "none"),
    (192, 1, "valid", "none"),
    (10, 1, "valid", "mean"),
]

# Our choice for "LeNet5-like" stages: two 5x5 valid convolutions with 2x2 max-pooling, 32 and
# 64 filters (LeNet-5's 6/16 widened as in its common variants). The top map is 64x4x4 on MNIST.
LENET_STAGES: Layers = [(32, 5, "valid", "max"), (64, 5, "valid", "max")]


def chain(layers: Layers, in_channels: int, batch_norm: bool = True) -> list[LayerSpec]:
    """Turn a compact layer list into LayerSpecs whose channel counts chain."""
    specs, channels = [], in_channels
    for out, kernel, padding, pool in layers:
        specs.append(LayerSpec(channels, out, kernel, padding, pool, batch_norm))
        channels = out
    return specs


# name -> (constructor, layer list, extra kwargs)
ARCHITECTURES: dict[str, tuple[Callable[..., DRMM], Layers, dict]] = {
    "drmm5": (DRMM, CONV_SMALL, {}),
    "drmm5_nrm": (DRMM, CONV_SMALL_NRM, {}),
    "drmm9": (DRMM, CONV_LARGE, {}),
    "drmm2": (DRMM, LENET_STAGES, {}),
    "rfm": (DRFM, LENET_STAGES[:1], {"factor_dim": 64}),
    "drfm2": (DRFM, LENET_STAGES, {"factor_dim": 64}),
}


def build_model(
    name: str,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    batch_norm: bool = True,
    nonneg_render: bool = False,
    render_path: str = "adjoint",
    leak: float = 0.0,
    **kwargs,
) -> DRMM:
    """Build a model of the DRMM family by architecture name (see ARCHITECTURES)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}; valid names: {sorted(ARCHITECTURES)}.")
    cls, layers, defaults = ARCHITECTURES[name]
    specs = chain(layers, in_channels, batch_norm)
    options = {"nonneg_render": nonneg_render, "render_path": render_path, "leak": leak}
    return cls(specs, num_classes, image_size, **options, **{**defaults, **kwargs})
