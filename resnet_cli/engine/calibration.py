"""Calibration of a classifier's probabilities: ECE with its reliability bins, NLL, Brier score, and temperature
scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

Pure functions on CPU tensors (logits ``(n, k)``, probabilities ``(n, k)``, integer targets ``(n,)``); sums in
float64. Binning follows Guo et al.: the top-1 confidence falls into one of ``bins`` equal-width bins over (0, 1],
each bin ``(lower, upper]``; the ECE is computed from exactly those bins (:func:`ece_from_bins`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

#: Guo et al. 2017 use 15 bins; keep it so figures compare across papers and runs.
DEFAULT_BINS = 15
# Temperature scaling optimises log T; beyond these bounds the fit is degenerate (a perfectly separated set drives
# T to 0, constant logits drive it to infinity), so T is kept within [1/100, 100].
_T_BOUND = 100.0
_LOG_T_BOUND = math.log(_T_BOUND)


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, bins: int = DEFAULT_BINS) -> list[dict[str, Any]]:
    """The reliability diagram's bins: per equal-width confidence bin ``(lower, upper]`` the number of images
    whose top-1 confidence falls into it, their mean confidence and their top-1 accuracy.

    Returns:
        One dict per bin, in order: ``lower``, ``upper``, ``count``, ``confidence`` and ``accuracy`` (both None for
        an empty bin). The counts sum to the number of images.

    Raises:
        ValueError: no images, shapes that do not match, or ``bins`` < 1.
    """
    probs, targets = _check(probs, targets)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    # right=False: boundaries[i-1] < x <= boundaries[i], i.e. (lower, upper] bins; a confidence of 0 joins the first.
    index = torch.bucketize(confidence, edges[1:-1], right=False)
    counts = torch.bincount(index, minlength=bins)
    conf_sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc_sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    out = []
    for i in range(bins):
        n = int(counts[i])
        out.append(
            {
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "count": n,
                "confidence": float(conf_sums[i] / n) if n else None,
                "accuracy": float(acc_sums[i] / n) if n else None,
            }
        )
    return out


def ece_from_bins(bins: list[dict[str, Any]]) -> float:
    """Expected calibration error of reliability bins: sum over bins of ``|accuracy - confidence| * count / n``.

    Raises:
        ValueError: the bins hold no images.
    """
    total = sum(int(b["count"]) for b in bins)
    if total == 0:
        raise ValueError("the reliability bins hold no images")
    return math.fsum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / total


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = DEFAULT_BINS) -> float:
    """Top-1 expected calibration error (Guo et al. 2017) over ``bins`` equal-width confidence bins, in [0, 1].

    Raises:
        ValueError: no images or shapes that do not match.
    """
    return ece_from_bins(reliability_bins(probs, targets, bins))


def negative_log_likelihood(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy of the softmax of ``logits`` (natural log), computed in float64.

    Raises:
        ValueError: no images or shapes that do not match.
    """
    logits, targets = _check(logits, targets)
    return float(nn.functional.cross_entropy(logits, targets))


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Multi-class Brier score: mean over images of the sum over classes of ``(p_k - onehot_k)^2``, in [0, 2].

    Raises:
        ValueError: no images or shapes that do not match.
    """
    probs, targets = _check(probs, targets)
    onehot = nn.functional.one_hot(targets, probs.shape[1]).double()
    return float(((probs - onehot) ** 2).sum(dim=1).mean())


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature ``T > 0`` that minimises the NLL of ``logits / T`` (temperature scaling, Guo et al. 2017).

    L-BFGS (torch.optim) on ``log T`` from ``T = 1``, in float64 on the CPU: deterministic for the same input.
    The argmax, hence the accuracy, is unchanged by any ``T``. ``T`` is kept within [0.01, 100].

    Raises:
        ValueError: no images or shapes that do not match.
    """
    with torch.inference_mode(False), torch.enable_grad():  # callers may hold inference_mode or no_grad
        logits, targets = _check(logits, targets)  # a normal tensor, even from one made under inference_mode
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS(
            [log_t], lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            scale = log_t.clamp(-_LOG_T_BOUND, _LOG_T_BOUND).exp()
            loss = nn.functional.cross_entropy(logits / scale, targets)
            loss.backward()
            return loss

        optimiser.step(closure)
    return min(max(float(log_t.detach().exp()), 1.0 / _T_BOUND), _T_BOUND)


def calibration_summary(logits: torch.Tensor, targets: torch.Tensor, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """``nll``, ``ece``, ``brier``, ``top1`` and ``reliability`` (the bins) of ``logits``: one section of an eval
    report.

    Raises:
        ValueError: no images or shapes that do not match.
    """
    logits, targets = _check(logits, targets)
    probs = logits.softmax(dim=1)
    reliability = reliability_bins(probs, targets, bins)
    return {
        "nll": negative_log_likelihood(logits, targets),
        "ece": ece_from_bins(reliability),
        "brier": brier_score(probs, targets),
        "top1": float((logits.argmax(dim=1) == targets).double().mean()),
        "reliability": reliability,
    }


def _check(values: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` as float64 ``(n, k)`` and ``targets`` as int64 ``(n,)``, detached on the CPU."""
    if values.ndim != 2 or targets.ndim != 1 or values.shape[0] != targets.shape[0]:
        raise ValueError(
            f"expected scores of shape (n, k) and targets of shape (n,), got {tuple(values.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError("no images: calibration needs at least one image and one class")
    # A copy, so that the caller's tensors are never changed (and, outside inference_mode, one autograd accepts).
    return values.detach().to("cpu", torch.float64, copy=True), targets.detach().to("cpu", torch.int64, copy=True)
