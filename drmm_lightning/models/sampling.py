"""Samples with shape: class-conditional switch priors and a self-consistent sampler.

The generative process of the paper (Eq. 5) draws the class c ~ Cat(pi_c) and every nuisance
g^(l) ~ Cat(pi_g^(l)) independently of c and of each other, one unit at a time; the image is the
class template rendered through those switches (Eqs. 6-7). With per-unit independent priors
pi_a, pi_t (the switch frequencies, the hard-EM M-step of the priors: implementation notes,
Section 8) the upper switches carry no pose of any class, so the plain samples are blobs. The
options here keep the paper's rendering (Eqs. 6, 35-36) and change only where the switches come
from; none of them is in the paper, each is named as such:

- SAMPLERS["independent"]: the paper's Eq. 5, every switch from its class-independent prior
  (DRMM.sample). The baseline; given prior_layers=k, the lowest k layers render through their
  prior means as below, for a comparison at the same k.
- SAMPLERS["class_prior"]: class-conditional switch priors p(g^(l) | c) for the upper layers,
  estimated in closed form from the switches the bottom-up E-step infers on images of class c:
  the same M-step as the paper's priors (frequencies of the inferred switches), restricted to the
  images of one class, pi_{a|c} = mean_{n: c_n = c} a_n and pi_{t|c}(j) = mean_{n: c_n = c}
  1[t_n = j]. The lower `prior_layers` layers render through their prior mean switches
  E[a] = pi_a, E[t] = pi_t (as DRMM.prior_layers does), so only the upper switches and the class
  shape the sample. Units stay independent given c. Option: p(g | c) as a mixture of M
  independent-unit distributions per class (pose clusters: a sample first draws its cluster
  m ~ p(m | c)), fit by EM whose M-step is the same closed-form frequencies weighted by the
  responsibilities; M = 1 is the plain M-step above. Independent units given c alone average
  every pose of the class into one; the clusters keep poses apart.
- SAMPLERS["self_consistent"]: start from a draw (of either prior above), then alternate the two
  closed-form steps that the class appearance model (Eq. 46, appearance.py) alternates:
  render class c through the switches (Eqs. 35-36), re-infer the switches from that rendering by
  the bottom-up pass (Eqs. 8-9, 42-43). A fixed point is an image that is the rendering of its
  own best poses for class c, as Eq. 46's solution is, reached from a random start instead of
  a uniform image, so that different draws settle in different poses. Optionally damped
  (the new image averaged with the old), as class_appearance damps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .drmm import DRMM, Inference
from .factor import DRFM

SAMPLERS = ("independent", "class_prior", "self_consistent")
STARTS = ("independent", "class_prior")  # where the self-consistent sampler draws its start


@dataclass
class ClassSwitchPriors:
    """p(g^(l) | c) of the upper layers as a mixture of M pose clusters per class (M = 1: the
    plain per-unit priors): weights (C, M) = p(m | c); a[l] (C, M, K, H, W) = P(a = ON | c, m)
    per unit; t[l] (C, M, K, H, W, 4) = P(t = j | c, m) over each 2x2 window (None where the
    layer does not max-pool). Layers below `first_layer` hold None (they render through their
    prior means). counts: the images of each class the priors were estimated from."""

    a: list[Tensor | None]
    t: list[Tensor | None]
    weights: Tensor
    counts: Tensor
    first_layer: int

    @property
    def components(self) -> int:
        """M, the pose clusters per class."""
        return self.weights.shape[1]


def check_sampler(model: DRMM, sampler: str, prior_layers: int | None = None) -> int:
    """The number of lower layers rendered through their prior means for `sampler` (the model's
    own prior_layers when None); a ValueError naming the option when the model cannot serve it."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}.")
    if isinstance(model, DRFM) and sampler != "independent":
        raise ValueError(
            f"sampler={sampler} renders a class c through class-given switches, but "
            f"{type(model).__name__} (a factor model) has no class variable at its top: its "
            "samples render a Gaussian code z ~ N(0, I). Use sampler=independent."
        )
    layers = len(model.rendering_layers)
    k = model.prior_layers if prior_layers is None else prior_layers
    if not 0 <= k < layers:
        raise ValueError(
            f"prior_layers={k} must be in [0, {layers - 1}] for this {layers}-layer model (the "
            "top layer's switches always render)."
        )
    return k


@contextmanager
def prior_mean_layers(model: DRMM, k: int) -> Iterator[DRMM]:
    """Render the lowest k layers through their prior mean switches within the block."""
    before = model.prior_layers
    model.prior_layers = k
    try:
        yield model
    finally:
        model.prior_layers = before


def window_positions(layer_t: Tensor, conv_size: int) -> Tensor:
    """The position (0-3, row-major) of each max-pool switch t inside its 2x2 window."""
    rows, cols = layer_t.div(conv_size, rounding_mode="floor"), layer_t % conv_size
    return (rows % 2) * 2 + cols % 2


@torch.no_grad()
def inferred_switches(
    model: DRMM, images: Tensor, first_layer: int, batch_size: int = 500
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """The switches the bottom-up E-step infers on `images`, flattened per layer from
    `first_layer` up: a (N, K*H*W) bool, and for max-pooling layers the window position of t
    (N, K*H*W) in 0-3."""
    layers = model.rendering_layers
    a: dict[int, list[Tensor]] = {i: [] for i in range(first_layer, len(layers))}
    pos: dict[int, list[Tensor]] = {}
    for x in images.split(batch_size):
        switches = model.infer(x.to(model.log_sigma2.device)).switches
        for i in a:
            a[i].append(switches[i].a.flatten(1).cpu())
            t = switches[i].t
            if t is not None:
                where = window_positions(t, layers[i].conv_size).flatten(1).to(torch.uint8)
                pos.setdefault(i, []).append(where.cpu())
    return {i: torch.cat(v) for i, v in a.items()}, {i: torch.cat(v) for i, v in pos.items()}


def bernoulli_mixture(
    a: dict[int, Tensor],
    pos: dict[int, Tensor],
    components: int,
    iterations: int = 30,
    generator: torch.Generator | None = None,
    floor: float = 1e-3,
) -> tuple[Tensor, dict[int, Tensor], dict[int, Tensor]]:
    """EM for a mixture of `components` independent-unit switch distributions over n images'
    switches (Bernoulli a, categorical t): returns p(m) (M,), P(a = ON | m) (M, U) per layer and
    P(t = j | m) (M, U, 4) per max-pooling layer. The M-step is the closed-form one of the
    priors, switch frequencies weighted by the responsibilities; with one component it is the
    plain frequency. `floor` keeps log-probabilities finite in the E-step only. Starts from a
    random hard assignment (seeded by `generator`)."""
    n = len(next(iter(a.values())))
    x = {i: v.float() for i, v in a.items()}
    start = torch.randint(0, components, (n,), generator=generator)
    r = F.one_hot(start, components).float()  # responsibilities p(m | switches of image n)
    for step in range(iterations + 1):
        w = r.sum(0)  # M-step: weighted frequencies (empty clusters keep the overall ones)
        empty = w < 1e-6
        weights = w / n
        p_a = {i: (r.T @ v) / w.clamp_min(1e-12)[:, None] for i, v in x.items()}
        p_t = {  # one (n, U) indicator of each window position at a time: 4x less memory
            i: torch.stack([r.T @ (v == j).float() for j in range(4)], -1)
            / w.clamp_min(1e-12)[:, None, None]
            for i, v in pos.items()
        }
        if empty.any():
            for i, v in x.items():
                p_a[i][empty] = v.mean(0)
            for i, v in pos.items():
                p_t[i][empty] = torch.stack([(v == j).float().mean(0) for j in range(4)], -1)
        if step == iterations or components == 1:
            break
        ll = weights.clamp_min(1e-30).log().expand(n, -1).clone()  # E-step: log p(m, g_n)
        for i, v in x.items():
            p = p_a[i].clamp(floor, 1 - floor)
            ll += v @ (p.log() - (1 - p).log()).T + (1 - p).log().sum(1)
        for i, v in pos.items():
            log_t = p_t[i].clamp_min(floor).log()
            for j in range(4):
                ll += (v == j).float() @ log_t[:, :, j].T
        r = torch.softmax(ll, dim=1)
    return weights, p_a, p_t


@torch.no_grad()
def estimate_class_priors(
    model: DRMM,
    images: Tensor,
    classes: Tensor,
    first_layer: int,
    components: int = 1,
    batch_size: int = 500,
    seed: int = 0,
) -> ClassSwitchPriors:
    """The M-step of the class-conditional switch priors p(g^(l) | c), l >= first_layer: the
    per-class frequencies of the switches the bottom-up E-step infers on `images`, whose classes
    are `classes` (labels, or the classifier's estimates). With components = M > 1, p(g | c) is
    a mixture of M independent-unit distributions per class (pose clusters) fit by EM, whose
    M-step is the same closed-form frequencies weighted by responsibilities (not in the paper).
    The model must be in eval mode (a training-mode pass would move its batch-norm statistics
    and class-independent priors)."""
    if model.training:
        raise ValueError("estimate_class_priors needs the model in eval mode (model.eval()).")
    num_classes = model.num_classes
    counts = torch.bincount(classes.cpu(), minlength=num_classes)
    missing = [c for c in range(num_classes) if counts[c] == 0]
    if missing:
        raise ValueError(
            f"No image of class {missing} to estimate p(g | c) from ({len(images)} images)."
        )
    if components < 1 or components > counts.min():
        raise ValueError(
            f"components={components} must be in [1, {int(counts.min())}]: each pose cluster "
            f"needs images, and the rarest class has {int(counts.min())} of the {len(images)}."
        )
    a, pos = inferred_switches(model, images, first_layer, batch_size)
    layers = model.rendering_layers
    generator = torch.Generator().manual_seed(seed)
    fits = []
    for c in range(num_classes):
        rows = (classes.cpu() == c).nonzero().flatten()
        fits.append(
            bernoulli_mixture(
                {i: v[rows] for i, v in a.items()},
                {i: v[rows] for i, v in pos.items()},
                components,
                generator=generator,
            )
        )
    device, dtype = layers[0].prior_a.device, layers[0].prior_a.dtype
    prior_a: list[Tensor | None] = [None] * len(layers)
    prior_t: list[Tensor | None] = [None] * len(layers)
    for i in a:
        shape = (num_classes, components, *layers[i].prior_a.shape)
        prior_a[i] = torch.stack([f[1][i] for f in fits]).to(device, dtype).view(shape)
        if i in pos:
            p_t = torch.stack([f[2][i] for f in fits])
            prior_t[i] = p_t.to(device, dtype).view(*shape, 4)
    weights = torch.stack([f[0] for f in fits]).to(device, dtype)
    return ClassSwitchPriors(prior_a, prior_t, weights, counts, first_layer)


@torch.no_grad()
def draw_switches(
    model: DRMM,
    classes: Tensor,
    priors: ClassSwitchPriors | None = None,
    generator: torch.Generator | None = None,
) -> Inference:
    """An Inference holding switches drawn for each image: from p(g^(l) | c) of its class for
    the layers `priors` holds, from the class-independent prior pi elsewhere (all layers when
    `priors` is None: Eq. 5)."""
    batch = len(classes)
    m = torch.zeros_like(classes)  # each image's pose cluster, m ~ p(m | c)
    if priors is not None and priors.components > 1:
        m = torch.multinomial(priors.weights[classes], 1, generator=generator).flatten()
    switches = []
    for i, layer in enumerate(model.rendering_layers):
        a = None if priors is None else priors.a[i]
        t = None if priors is None else priors.t[i]
        switches.append(
            layer.sample_switches(
                batch,
                generator,
                prior_a=None if a is None else a[classes, m],
                prior_t=None if t is None else t[classes, m],
            )
        )
    empty = model.log_sigma2.new_empty(batch, 0)
    return Inference(empty, empty, switches)


@torch.no_grad()
def self_consistent(
    model: DRMM, inference: Inference, classes: Tensor, steps: int, damping: float = 0.0
) -> Tensor:
    """The image after `steps` alternations of the two closed-form steps of Eq. 46's class
    appearance model from a start: re-infer the switches bottom-up from the current image, then
    render class c through them, x <- damping * x + (1 - damping) * render(c, g(x)). The start
    is the rendering of `inference`, so 0 steps gives the plain sample. damping 0 is the plain
    alternation; class_appearance averages (damping 1/2, rescaled to a fixed norm). Eval mode."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"damping must be in [0, 1), got {damping}.")
    image = model.render(inference, classes).image
    for _ in range(steps):
        rendered = model.render(model.infer(image), classes).image
        image = damping * image + (1.0 - damping) * rendered if damping else rendered
    return image


@torch.no_grad()
def generate(
    model: DRMM,
    classes: Tensor,
    sampler: str = "independent",
    priors: ClassSwitchPriors | None = None,
    prior_layers: int | None = None,
    steps: int = 0,
    start: str = "class_prior",
    generator: torch.Generator | None = None,
    damping: float = 0.0,
) -> Tensor:
    """Images (in the model's input units) of the given classes, drawn by `sampler` (SAMPLERS).
    class_prior, and self_consistent started from class_prior, need the class priors."""
    k = check_sampler(model, sampler, prior_layers)
    if sampler == "independent":  # Eq. 5 (with the model's own prior_layers: DRMM.sample)
        with prior_mean_layers(model, k):
            return model.sample(classes, generator).image
    if start not in STARTS:
        raise ValueError(f"Unknown start {start!r} of the self-consistent sampler; valid: {STARTS}")
    conditional = sampler == "class_prior" or start == "class_prior"
    if conditional and priors is None:
        raise ValueError(f"sampler={sampler} (start={start}) needs the class priors p(g | c).")
    if conditional and priors is not None and priors.first_layer > k:
        raise ValueError(
            f"The class priors start at layer {priors.first_layer + 1} but prior_layers={k} "
            f"renders layer {k + 1} through its switches: estimate them with first_layer={k}."
        )
    with prior_mean_layers(model, k):
        inference = draw_switches(model, classes, priors if conditional else None, generator)
        if sampler == "self_consistent":
            return self_consistent(model, inference, classes, steps, damping)
        return model.render(inference, classes).image
