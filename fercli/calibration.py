"""Calibrated probabilities and the figures that judge them.

A model's raw probabilities rank faces well but their scale is off (an
average of views and networks trained with label smoothing is
underconfident). A linear map of the log-probabilities fixes it:
p = softmax(W @ log(raw) + b), fitted on the validation split by negative
log-likelihood (Dirichlet calibration; W = T^-1 I, b = 0 is temperature
scaling, which alone leaves the middle confidences 4-5 points too high on
FER-2013). W and b are stored in the model file's metadata (`calibration`)
and every runtime applies them through `calibrate`, so a .keras file and the
.lite file exported from it give the same probabilities.

The figures (`fercli eval`): expected calibration error over 15 equal-width
bins of the top probability, negative log-likelihood, Brier score, and the
accuracy of the most confident 100/90/80/50% of the faces.
"""
from __future__ import annotations

import numpy as np

ECE_BINS = 15
SELECTIVE_SHARES = (1.0, 0.9, 0.8, 0.5)
# Off-diagonal and bias penalties the fit chooses from (by held-out ECE, `choose_penalty`);
# REGULARISATION where there are too few images to choose.
PENALTIES = (1e-3, 1e-2, 3e-2, 1e-1)
REGULARISATION = 1e-2
_FLOOR = 1e-12   # log(0) guard: a network can round a probability to exactly 0


def calibrate(probabilities: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Raw (N, C) probabilities -> calibrated ones by the model's stored
    calibration: softmax(W @ log(raw) + b) (None: unchanged)."""
    if not calibration or len(probabilities) == 0:
        return probabilities
    weights, bias = np.asarray(calibration["weights"], np.float64), np.asarray(calibration["bias"], np.float64)
    return _softmax(_log(probabilities) @ weights.T + bias).astype(np.float32)


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probabilities, np.float64), _FLOOR))


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    chosen = np.asarray(probabilities, np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(chosen, _FLOOR)).mean()) if len(labels) else 0.0


def fit_calibration(probabilities: np.ndarray, labels: np.ndarray, strength: float = REGULARISATION) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) minimising the negative log-likelihood of softmax(W @ log p + b),
    with `strength` x (squared off-diagonal weights + squared biases) added
    (Dirichlet calibration with off-diagonal regularisation, Kull et al. 2019):
    a convex problem, solved by damped Newton steps from W = I, b = 0."""
    features = np.concatenate([_log(probabilities), np.ones((len(labels), 1))], axis=1)   # (N, C + 1)
    n, classes = len(labels), probabilities.shape[1]
    targets = np.eye(classes)[labels]
    penalty = np.ones((classes, classes + 1))
    np.fill_diagonal(penalty, 0.0)   # the diagonal (each class's own temperature) goes free
    params = np.concatenate([np.eye(classes), np.zeros((classes, 1))], axis=1)

    def objective(v):
        q = _softmax(features @ v.T)
        loss = -np.log(np.maximum(q[np.arange(n), labels], _FLOOR)).mean() + strength * (penalty * v ** 2).sum()
        return loss, q

    loss, q = objective(params)
    for _ in range(50):
        gradient = (q - targets).T @ features / n + 2 * strength * penalty * params
        # Hessian of the mean multinomial log-loss: sum_i (diag(q_i) - q_i q_i^T) (x) x_i x_i^T / n
        outer = np.einsum("ia,ib->iab", features, features)
        covariance = np.einsum("ij,jk->ijk", q, np.eye(classes)) - np.einsum("ij,ik->ijk", q, q)
        hessian = np.einsum("ijk,iab->jakb", covariance, outer).reshape(classes * (classes + 1), -1) / n
        hessian += np.diag(2 * strength * penalty.ravel()) + 1e-9 * np.eye(len(hessian))
        step = np.linalg.lstsq(hessian, gradient.ravel(), rcond=None)[0].reshape(params.shape)
        size = 1.0
        while size > 1e-4:
            new_loss, new_q = objective(params - size * step)
            if new_loss <= loss:
                break
            size /= 2
        else:
            break
        done = loss - new_loss < 1e-10
        params, loss, q = params - size * step, new_loss, new_q
        if done:
            break
    return params[:, :classes], params[:, classes]


def choose_penalty(probabilities: np.ndarray, labels: np.ndarray, penalties=PENALTIES, repeats: int = 3,
                   seed: int = 0) -> tuple[float, dict[float, float]]:
    """The penalty whose fit, made on one half of the data, gives the other half
    the lowest expected calibration error (the mean over `repeats` random
    2-fold splits); with fewer than 200 images, REGULARISATION."""
    if len(labels) < 200:
        return REGULARISATION, {}
    rng = np.random.default_rng(seed)
    held_out = {penalty: [] for penalty in penalties}
    for _ in range(repeats):
        order = rng.permutation(len(labels))
        halves = order[:len(order) // 2], order[len(order) // 2:]
        for fit, test in (halves, halves[::-1]):
            for penalty in penalties:
                weights, bias = fit_calibration(probabilities[fit], labels[fit], penalty)
                calibrated = calibrate(probabilities[test], {"weights": weights, "bias": bias})
                held_out[penalty].append(expected_calibration_error(calibrated, labels[test]))
    means = {penalty: float(np.mean(values)) for penalty, values in held_out.items()}
    return min(means, key=means.get), means


def fitted_calibration(probabilities: np.ndarray, labels: np.ndarray, data: str) -> dict:
    """The metadata entry for a calibration fitted on (raw probabilities, labels) of `data`,
    its penalty chosen by `choose_penalty`."""
    labels = np.asarray(labels)
    penalty, held_out = choose_penalty(probabilities, labels)
    weights, bias = fit_calibration(probabilities, labels, penalty)
    entry = {"method": "dirichlet", "weights": np.round(weights, 6).tolist(), "bias": np.round(bias, 6).tolist()}
    calibrated = calibrate(probabilities, entry)
    return {**entry, "data": data, "n": int(len(labels)), "penalty": penalty,
            "held_out_ece": {str(k): round(v, 4) for k, v in held_out.items()},
            "ece_before": round(expected_calibration_error(probabilities, labels), 4),
            "ece_after": round(expected_calibration_error(calibrated, labels), 4),
            "nll_before": round(negative_log_likelihood(probabilities, labels), 4),
            "nll_after": round(negative_log_likelihood(calibrated, labels), 4)}


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of the top probability: faces, their mean confidence, their accuracy."""
    confidence = np.asarray(probabilities).max(axis=1)
    correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        table.append({"low": b / bins, "high": (b + 1) / bins, "n": count,
                      "confidence": float(confidence[inside].mean()) if count else None,
                      "accuracy": float(correct[inside].mean()) if count else None})
    return table


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over the bins, weighted by the faces in each."""
    n = len(labels)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(probabilities, labels, bins)
                     if b["n"]) / n) if n else 0.0


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance between the probabilities and the one-hot label (summed over classes)."""
    probabilities = np.asarray(probabilities, np.float64)
    if not len(labels):
        return 0.0
    one_hot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def selective_accuracy(probabilities: np.ndarray, labels: np.ndarray, shares=SELECTIVE_SHARES) -> dict[str, float]:
    """{"100%": accuracy of all faces, "90%": of the most confident 90%, ...}."""
    confidence = np.asarray(probabilities).max(axis=1)
    correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    result = {}
    for share in shares:
        kept = max(1, int(round(share * len(order)))) if len(order) else 0
        result[f"{share:.0%}"] = float(correct[order[:kept]].mean()) if kept else 0.0
    return result


def calibration_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Everything `fercli eval` reports about the probabilities beside accuracy."""
    return {"ece": expected_calibration_error(probabilities, labels),
            "nll": negative_log_likelihood(probabilities, labels),
            "brier": brier_score(probabilities, labels),
            "mean_confidence": float(np.asarray(probabilities).max(axis=1).mean()) if len(labels) else 0.0,
            "selective_accuracy": selective_accuracy(probabilities, labels),
            "reliability": reliability_bins(probabilities, labels)}
