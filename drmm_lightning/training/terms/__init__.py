"""The terms of the EG objective, one file each (or a few that share what they compute): the
DRMM's own (classification, reconstruction, posterior) and its peers (pseudo-label, VAT, mean
teacher). Every module of this folder is imported here, and each Term subclass registers by its
name, so a new term is one file here and one entry of `objective.terms` (a YAML of conf/objective/).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from .base import COST_MODES, ESTEPS, StepContext, Term, linear_ramp, sigmoid_ramp

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .classification import KL, ClassBalance, CrossEntropy  # noqa: E402
from .mean_teacher import MeanTeacher  # noqa: E402
from .posterior import Marginal, RenderCE, RenderConsistency  # noqa: E402
from .pseudo_label import PseudoLabel  # noqa: E402
from .reconstruction import LayerReconstruction, NonNegativity, Reconstruction  # noqa: E402
from .vat import VAT  # noqa: E402

TERMS = Term.REGISTRY  # name -> Term class, every term defined so far
# The order terms are evaluated and summed in: the DRMM's (the E-step's own), then the peers,
# then any other in the order configured (random draws come in the same order every step).
ORDER = (
    "cross_entropy",
    "kl",
    "class_balance",
    "reconstruction",
    "nonneg",
    "layer_reconstruction",
    "render_ce",
    "marginal",
    "render_consistency",
    "pseudo_label",
    "vat",
    "mean_teacher",
)


def build_terms(config: dict[str, Any] | None) -> dict[str, Term]:
    """{name: term} from `objective.terms` ({name: {weight: ..., options...}}), in ORDER; a null
    entry is off. Unknown names and options are refused with the valid ones (the CLI's schema
    refuses them earlier, cli/schema.py)."""
    config = {k: v for k, v in (config or {}).items() if v is not None}
    for name, options in config.items():
        if name not in TERMS:
            raise ValueError(
                f"Unknown objective.terms entry {name!r}; valid: {', '.join(sorted(TERMS))}."
            )
        valid = set(inspect.signature(TERMS[name]).parameters)
        if unknown := sorted(set(options) - valid):
            raise ValueError(
                f"Unknown option(s) {unknown} of objective.terms.{name}; valid: {sorted(valid)}."
            )
    names = [n for n in ORDER if n in config] + [n for n in config if n not in ORDER]
    return {name: TERMS[name](**dict(config[name])) for name in names}


__all__ = [
    "COST_MODES",
    "ESTEPS",
    "KL",
    "ORDER",
    "TERMS",
    "VAT",
    "ClassBalance",
    "CrossEntropy",
    "LayerReconstruction",
    "Marginal",
    "MeanTeacher",
    "NonNegativity",
    "PseudoLabel",
    "Reconstruction",
    "RenderCE",
    "RenderConsistency",
    "StepContext",
    "Term",
    "build_terms",
    "linear_ramp",
    "sigmoid_ramp",
]
