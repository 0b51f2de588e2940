"""Plug-in terms of the EG objective: each one file here and one config of the `objective` group
(conf/objective/<name>.yaml, `terms: {<name>: {weight: ..., ...}}`). The peers of issue 21:
pseudo-label, virtual adversarial training, mean teacher; each composes with the DRMM's own
terms (e.g. objective.weights.reconstruction=1.0 adds the rendering)."""

from __future__ import annotations

import inspect
from typing import Any

from .base import StepContext, Term, linear_ramp, sigmoid_ramp
from .mean_teacher import MeanTeacher
from .pseudo_label import PseudoLabel
from .vat import VAT

TERMS: dict[str, type[Term]] = {cls.name: cls for cls in (PseudoLabel, VAT, MeanTeacher)}


def build_terms(config: dict[str, Any] | None) -> dict[str, Term]:
    """{name: term} from `objective.terms` ({name: {weight: ..., options...}}); a null entry is
    off. Unknown names and options are refused with the valid ones."""
    terms: dict[str, Term] = {}
    for name, options in (config or {}).items():
        if options is None:
            continue
        if name not in TERMS:
            raise ValueError(f"Unknown objective.terms entry {name!r}; valid: {', '.join(TERMS)}.")
        valid = set(inspect.signature(TERMS[name]).parameters)
        if unknown := sorted(set(options) - valid):
            raise ValueError(
                f"Unknown option(s) {unknown} of objective.terms.{name}; valid: {sorted(valid)}."
            )
        terms[name] = TERMS[name](**dict(options))
    return terms


__all__ = [
    "TERMS",
    "MeanTeacher",
    "PseudoLabel",
    "StepContext",
    "Term",
    "VAT",
    "build_terms",
    "linear_ramp",
    "sigmoid_ramp",
]
