"""Linear probes: how much of a variable a feature set holds in a linearly decodable form (paper
Section 4, Fig. 2 left), as held-out accuracy (the class, multinomial logistic regression) and
held-out R^2 (each continuous nuisance, ridge regression), fit by scikit-learn.

Every feature set is centred and, when it has more than `components` dimensions, reduced to its
top `components` principal directions, both fit on the probe-train features only. That gives
every layer's probe the same capacity (a 15,000-unit first layer and a 128-unit top layer are
compared with the same number of inputs); the probe stays linear in the layer's units. The
regularisation strength is chosen by cross-validation within probe-train; probe-test is only
scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor


def sklearn() -> Any:
    """The scikit-learn package with the modules the probes use imported, or an ImportError
    saying how to install it."""
    try:
        import sklearn
        from sklearn import (  # noqa: F401 (imported for their attributes on sklearn)
            decomposition,
            linear_model,
            metrics,
            model_selection,
        )
    except ImportError as err:
        raise ImportError(
            "drmm-probe fits its probes with scikit-learn, which is not installed: "
            "pip install 'drmm-lightning[probe]' (or pip install scikit-learn)."
        ) from err
    return sklearn


@dataclass(frozen=True)
class ProbeSettings:
    """How every probe is fit: PCA size, regularisation grids, the seed of the randomised PCA."""

    components: int = 256
    class_C: Sequence[float] = (0.01, 0.1, 1.0)  # inverse L2 strengths tried by 3-fold CV
    ridge_alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0)  # tried by leave-one-out
    max_iter: int = 2000  # lbfgs; 500 left the class probe of a 128-unit layer unconverged
    seed: int = 0


def reduce(train: np.ndarray, test: np.ndarray, settings: ProbeSettings) -> tuple[np.ndarray, ...]:
    """Both sets centred, projected on the top settings.components principal directions when
    wider, and divided by one scale (unit mean variance per input), all fit on `train` alone.
    Units are not standardised one by one: a pixel or switch that is almost never on would be
    blown up to the size of the busiest one, and the probe would fit those rare events."""
    mean = train.mean(0, keepdims=True)
    train, test = train - mean, test - mean
    if train.shape[1] > settings.components:
        pca = sklearn().decomposition.PCA(
            settings.components, svd_solver="randomized", random_state=settings.seed
        )
        train, test = pca.fit_transform(train), pca.transform(test)
    scale = np.sqrt((train**2).mean(0).mean()) or 1.0
    return train / scale, test / scale


def class_accuracy(
    train: np.ndarray,
    labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    settings: ProbeSettings,
) -> float:
    """Held-out accuracy of a multinomial logistic regression of the class on the features."""
    sk = sklearn()
    logistic = sk.linear_model.LogisticRegression(max_iter=settings.max_iter)
    probe = sk.model_selection.GridSearchCV(logistic, {"C": list(settings.class_C)}, cv=3)
    probe.fit(train, labels)
    return float((probe.predict(test) == test_labels).mean())


def nuisance_r2(
    train: np.ndarray,
    targets: np.ndarray,
    test: np.ndarray,
    test_targets: np.ndarray,
    settings: ProbeSettings,
) -> list[float]:
    """Held-out R^2 of a ridge regression of each target column (a nuisance variable) on the
    features, each with its own regularisation; 1 = decoded exactly, 0 = no better than the
    probe-train mean (below 0: worse)."""
    sk = sklearn()
    probe = sk.linear_model.RidgeCV(alphas=list(settings.ridge_alphas), alpha_per_target=True)
    probe.fit(train, targets)
    predicted = probe.predict(test).reshape(test_targets.shape)
    return [
        float(sk.metrics.r2_score(test_targets[:, j], predicted[:, j]))
        for j in range(test_targets.shape[1])
    ]


def probe_features(
    train: Tensor,
    test: Tensor,
    labels: tuple[Tensor, Tensor],
    nuisances: tuple[dict[str, Tensor], dict[str, Tensor]],
    settings: ProbeSettings,
) -> dict[str, float]:
    """{variable: score} of one feature set: 'class' (accuracy) and every nuisance (R^2),
    probes fit on (train, labels[0], nuisances[0]) and scored on the test counterparts."""
    x_train, x_test = reduce(train.numpy(), test.numpy(), settings)
    scores = {
        "class": class_accuracy(x_train, labels[0].numpy(), x_test, labels[1].numpy(), settings)
    }
    names = list(nuisances[0])
    if names:
        y_train, y_test = (np.stack([n[k].double().numpy() for k in names], 1) for n in nuisances)
        scores.update(zip(names, nuisance_r2(x_train, y_train, x_test, y_test, settings)))
    return scores
