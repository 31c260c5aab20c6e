"""The audit's probe: can a linear model on fixed image features tell two sets apart?

Every scan is brought to one canonical input (8-bit RGB, ``size`` x ``size``), and
eight per-pixel maps are computed from it: grey level, colourfulness (max - min
channel), high-pass (grey minus its Gaussian blur), local standard deviation (low
where a repaint smoothed the speckle), white and black top-hats (thin bright and
dark strokes), gradient magnitude (sharp drawn edges) and the grey level of flat
pixels (drawn fills; speckle is never flat). A scan's features are the shares of
its pixels in each bin of each map's fixed histogram, on a log scale
(``log(1 + share / EPS)``), so that the few pixels a mark or a repaint occupies
weigh as much as the bulk of the scan. Position is deliberately not a feature:
marks sit anywhere, and per-cell features only added noise on phantom scans.

Because a feature ``t(share)`` is ``share * t(share) / share`` and a share is a mean
over pixels, a linear score is exactly a mean of per-pixel contributions: the
heatmap of a scan is its score, pixel by pixel, with no gradient or occlusion
approximation.

The classifier is ridge regression on the standardised features with a fixed
penalty. Refitting for a permutation changes only the right-hand side of one
linear system per fold, so all permutations are solved at once: a permutation test
of a thousand refits costs about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from annot_denoise.io import split_alpha, to_float, to_rgb
from annot_denoise.runtime import intra_op_threads

HEAT_BLOCK = 4  # heatmaps are kept at size / HEAT_BLOCK (block means: still exact)
MAPS = ("grey", "colour", "highpass", "local_std", "tophat", "blackhat", "gradient", "flat_grey")
# Fixed bin edges per map (values outside the edges are not counted): the tails,
# where marks and repaints live, get narrow bins.
_HIGH = np.array([0.005, 0.02, 0.04, 0.07, 0.12, 0.2, 0.3, 1.0])
_HAT = np.array([0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 1.0])
EDGES = {
    "grey": np.linspace(0.0, 1.0, 17),
    "colour": np.array([0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 1.0]),
    # symmetric: the same edges below and above zero
    "highpass": np.concatenate([-_HIGH[::-1], _HIGH]),
    "local_std": np.array([0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.5]),
    "tophat": _HAT,
    "blackhat": _HAT,
    "gradient": np.array([0, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 4.0]),
    "flat_grey": np.linspace(0.0, 1.0, 11),
}
N_FEATURES = sum(len(e) - 1 for e in EDGES.values())
EPS = 1e-5  # share of pixels at which the log scale bends (a few pixels of a scan)
# The ridge penalty. Features are scaled so that the kernel's diagonal is about 1: a
# penalty of 1 weighs like one average scan. Fixed, not tuned per fold: generalised
# cross-validation chose near-interpolation here and cost power (raw vs clean
# phantoms 0.73-0.90 instead of 0.96-0.99); 0.1 to 10 all do about as well.
PENALTY = 1.0
DARK = 0.02  # local_std is not binned where the scan is black (outside the field of view)
FLAT = 0.01  # flat_grey: the grey level where the local std is below this
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def probe_input(image: np.ndarray, size: int) -> np.ndarray:
    """The canonical probe input: colour (alpha dropped, grey repeated) as 8-bit RGB,
    resized to ``size`` x ``size`` (area averaging when shrinking)."""
    rgb = to_float(to_rgb(split_alpha(image)[0]))
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def feature_maps(probe: np.ndarray) -> np.ndarray:
    """(len(MAPS), H, W) float32 maps of a probe input."""
    rgb = probe.astype(np.float32) / 255.0
    grey = rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2]
    colour = rgb.max(axis=2) - rgb.min(axis=2)
    high = grey - cv2.GaussianBlur(grey, (0, 0), 2.0)
    mean = cv2.blur(grey, (5, 5))
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (5, 5)) - mean * mean, 0.0))
    std[mean < DARK] = -1.0  # outside every bin
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    tophat = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, kernel)
    blackhat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel)
    gradient = np.hypot(cv2.Sobel(grey, -1, 1, 0, ksize=1), cv2.Sobel(grey, -1, 0, 1, ksize=1))
    flat = np.where((std >= 0) & (std < FLAT), grey, -1.0)
    return np.stack([grey, colour, high, std, tophat, blackhat, gradient, flat])


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of every value, -1 outside the edges (the last edge is inclusive)."""
    idx = np.searchsorted(edges, values, side="right") - 1
    idx[values == edges[-1]] = len(edges) - 2
    idx[(values < edges[0]) | (values > edges[-1])] = -1
    return idx


def _codes(probe: np.ndarray) -> list[np.ndarray]:
    """Per map, the bin of every pixel (-1: none)."""
    return [_bins(m, EDGES[name]) for m, name in zip(feature_maps(probe), MAPS)]


def _transform(share: np.ndarray) -> np.ndarray:
    return np.log1p(share / EPS)


def features(probe: np.ndarray) -> np.ndarray:
    """The scan's feature vector (float64, N_FEATURES): log-scaled histogram shares."""
    shares = [
        np.bincount(idx[idx >= 0], minlength=len(EDGES[name]) - 1) / idx.size
        for idx, name in zip(_codes(probe), MAPS)
    ]
    return _transform(np.concatenate(shares).astype(np.float64))


def contribution_map(probe: np.ndarray, weights: np.ndarray, offset: float) -> np.ndarray:
    """Per-pixel share of the linear score ``weights @ features(probe) + offset``,
    block-averaged to (size / HEAT_BLOCK)^2: the map's mean is the score exactly."""
    codes = _codes(probe)
    size = probe.shape[0]
    shares = np.concatenate(
        [np.bincount(i[i >= 0], minlength=len(EDGES[n]) - 1) / i.size for i, n in zip(codes, MAPS)]
    )
    # A pixel in bin f carries weight_f * t(share_f) / share_f: summed over its
    # share_f * N pixels and divided by N, that is the feature's term exactly.
    per_bin = np.divide(
        weights * _transform(shares), shares, out=np.zeros_like(weights), where=shares > 0
    )
    heat = np.full((size, size), offset, np.float64)
    start = 0
    for idx, name in zip(codes, MAPS):
        n_bins = len(EDGES[name]) - 1
        heat += np.append(per_bin[start : start + n_bins], 0.0)[idx]  # index -1: nothing
        start += n_bins
    b = size // HEAT_BLOCK
    return heat.reshape(b, HEAT_BLOCK, b, HEAT_BLOCK).mean(axis=(1, 3)).astype(np.float32)


@dataclass
class ProbeResult:
    """Out-of-fold scores (higher = more like the positive set) and their statistics."""

    scores: np.ndarray  # (n,) float
    labels: np.ndarray  # (n,) bool, True = positive set
    folds: np.ndarray  # (n,) int
    auc: float
    ci_low: float
    ci_high: float
    p_value: float
    permutations: int
    bootstrap: int
    # Per fold: (weights on the raw features, offset) so that score = w @ x + offset.
    models: list[tuple[np.ndarray, float]]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic, ties counted half."""
    ranks = _average_ranks(scores)
    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # ties: every member gets the mean of their ranks
        sums = np.bincount(inverse, weights=ranks)
        ranks = sums[inverse] / counts[inverse]
    return ranks


def _column_aucs(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of every column of ``scores`` (n, P) against ``labels`` (n, P); continuous
    scores, so ordinal ranks (ties would be counted in order, not half)."""
    ranks = np.argsort(np.argsort(scores, axis=0, kind="stable"), axis=0) + 1.0
    n_pos = labels.sum(axis=0)
    n_neg = labels.shape[0] - n_pos
    return ((ranks * labels).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def grouped_folds(
    labels: np.ndarray, groups: Sequence[str], k: int, rng: np.random.Generator
) -> np.ndarray:
    """Fold of every item: whole groups to a fold, classes balanced across folds
    (groups in random order, each to the fold it unbalances least)."""
    names, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    counts = np.zeros((len(names), 2))
    np.add.at(counts, (inverse, labels.astype(int)), 1)
    k = min(k, len(names))
    load = np.zeros((k, 2))
    fold_of = np.empty(len(names), int)
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]  # big groups first
    for g in order:
        cost = ((load + counts[g]) ** 2).sum(axis=1)
        fold_of[g] = int(np.argmin(cost + rng.random(k) * 1e-9))
        load[fold_of[g]] += counts[g]
    return fold_of[inverse]


def permuted_labels(
    labels: np.ndarray, groups: Sequence[str], n: int, rng: np.random.Generator
) -> np.ndarray:
    """(len(labels), n) label columns under the null: whole groups swap labels when
    every group is of one class (frames of a clip stay alike), else items do."""
    names, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    first = np.zeros(len(names), bool)
    first[inverse] = labels
    pure = np.array_equal(first[inverse], labels)
    out = np.empty((len(labels), n), bool)
    for j in range(n):
        out[:, j] = rng.permutation(first)[inverse] if pure else rng.permutation(labels)
    return out


def cross_validate(
    x: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[str],
    *,
    folds: int = 5,
    permutations: int = 1000,
    bootstrap: int = 1000,
    seed: int = 0,
) -> ProbeResult:
    """Out-of-fold scores for ``x`` (n, F) and ``labels`` (bool), grouped k-fold;
    AUC with a group bootstrap 95% interval and a one-sided permutation p-value
    (the whole fit, penalty choice included, is repeated for every replicate and
    every permutation)."""
    labels = np.asarray(labels, bool)
    if len(set(groups)) < 2:
        raise ValueError("every scan is in one group: no fold can be held out")
    rng = np.random.default_rng(seed)
    fold = grouped_folds(labels, groups, folds, rng)
    columns = np.concatenate(
        [labels[:, None], permuted_labels(labels, groups, permutations, rng)], axis=1
    )
    scores = np.zeros(columns.shape)
    models = []
    for f in np.unique(fold):
        test, train = fold == f, fold != f
        s, w, offset = _ridge_fold(x[train], columns[train].astype(float), x[test])
        scores[test] = s
        models.append((w, offset))
    observed = auc(scores[:, 0], labels)
    null = _column_aucs(scores[:, 1:], columns[:, 1:]) if permutations else np.array([])
    p = (1 + np.sum(null >= observed - 1e-12)) / (1 + len(null))
    low, high = _bootstrap_interval(observed, x, labels, groups, folds, bootstrap, rng)
    return ProbeResult(
        scores=scores[:, 0],
        labels=labels,
        folds=fold,
        auc=observed,
        ci_low=low,
        ci_high=high,
        p_value=float(p),
        permutations=permutations,
        bootstrap=bootstrap,
        models=models,
    )


def _ridge_fold(
    x_train: np.ndarray, y: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge on standardised features for every column of ``y`` at once (one solve,
    many right-hand sides). Returns the test scores (n_test, P), and for column 0 the
    weights on raw features and the offset (score = weights @ x + offset).

    In torch on one thread: these matrices are tiny, and a multithreaded BLAS on a
    busy machine spent ten times longer waiting for its threads than computing."""
    with intra_op_threads(1):
        xt, yt, xs = (torch.from_numpy(np.asarray(a, np.float64)) for a in (x_train, y, x_test))
        mean, std = xt.mean(0), xt.std(0, correction=0)
        keep = std > 1e-9  # constant in this fold: carries nothing
        scale = torch.where(keep, 1.0 / std.clamp_min(1e-9), 0.0) / max(int(keep.sum()), 1) ** 0.5
        z, z_test = (xt - mean) * scale, (xs - mean) * scale
        y_mean = yt.mean(0)
        yc = yt - y_mean
        n, f = z.shape
        if n <= f:  # the kernel form is the smaller system
            w = z.T @ torch.linalg.solve(z @ z.T + PENALTY * torch.eye(n, dtype=z.dtype), yc)
        else:
            w = torch.linalg.solve(z.T @ z + PENALTY * torch.eye(f, dtype=z.dtype), z.T @ yc)
        scores = (z_test @ w + y_mean).numpy()
        weights = (w[:, 0] * scale).numpy()
        offset = float(y_mean[0]) - float(weights @ mean.numpy())
    return scores, weights, offset


def _bootstrap_interval(
    estimate: float,
    x: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[str],
    folds: int,
    n: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """95% interval of the out-of-fold AUC from bootstrap replicates of the whole
    procedure: groups are drawn with replacement (a group's scans together, its copies
    in one fold) and the probe is refitted.

    Resampling the out-of-fold scores alone misses how much the fitted probe itself
    varies: on halves of one clean phantom set that interval held 0.5 only 88% of the
    time. Refitted replicates see about 63% of the distinct scans, so they are
    pessimistic when there is something to learn: their spread around their median
    is kept and centred on the estimate (a shifted percentile interval), clipped to
    [0, 1]. On those phantom halves it held 0.5 in 98 of 100 draws."""
    if n == 0:
        return float("nan"), float("nan")
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    values = []
    for _ in range(n):
        drawn = rng.integers(0, len(members), size=len(members))
        idx = np.concatenate([members[g] for g in drawn])
        y = labels[idx]
        if y.all() or not y.any():
            continue
        fold = grouped_folds(y, inverse[idx].astype(str), folds, rng)
        scores = np.zeros(len(idx))
        for f in np.unique(fold):
            test = fold == f
            if test.all():
                break
            scores[test] = _ridge_fold(x[idx][~test], y[~test, None].astype(float), x[idx][test])[
                0
            ][:, 0]
        else:
            values.append(auc(scores, y))
    if not values:  # every replicate drew one class or one fold only
        return float("nan"), float("nan")
    low, mid, high = np.quantile(values, [0.025, 0.5, 0.975])
    return float(max(estimate - (mid - low), 0.0)), float(min(estimate + (high - mid), 1.0))
