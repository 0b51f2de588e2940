"""The DRMM family in plain PyTorch: rendering layers, stacks, factor tops, objective terms."""

from .architectures import ARCHITECTURES, build_model
from .drmm import DRMM, Inference, Rendering
from .factor import DRFM
from .layer import LayerSpec, RenderingLayer, Switches
from .objective import (
    class_balance_kl,
    cross_entropy,
    kl_term,
    nonneg_penalty,
    reconstruction_error,
)

__all__ = [
    "ARCHITECTURES",
    "DRFM",
    "DRMM",
    "Inference",
    "LayerSpec",
    "Rendering",
    "RenderingLayer",
    "Switches",
    "build_model",
    "class_balance_kl",
    "cross_entropy",
    "kl_term",
    "nonneg_penalty",
    "reconstruction_error",
]
