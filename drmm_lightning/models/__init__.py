"""The DRMM family in plain PyTorch: rendering layers, stacks, factor tops, objective terms."""

from .appearance import activity_maximization, class_appearance
from .architectures import ARCHITECTURES, build_model
from .drmm import DRMM, RENDER_PATHS, Inference, Rendering
from .factor import DRFM
from .layer import LayerSpec, RenderingLayer, Switches
from .losses import (
    class_balance_kl,
    cross_entropy,
    kl_term,
    layer_reconstruction_error,
    nonneg_penalty,
    reconstruction_error,
)
from .posterior import class_render_errors, classify_by_rendering, render_every_class

__all__ = [
    "ARCHITECTURES",
    "DRFM",
    "DRMM",
    "RENDER_PATHS",
    "Inference",
    "LayerSpec",
    "Rendering",
    "RenderingLayer",
    "Switches",
    "activity_maximization",
    "build_model",
    "class_appearance",
    "class_balance_kl",
    "class_render_errors",
    "cross_entropy",
    "kl_term",
    "layer_reconstruction_error",
    "nonneg_penalty",
    "reconstruction_error",
    "classify_by_rendering",
    "render_every_class",
]
