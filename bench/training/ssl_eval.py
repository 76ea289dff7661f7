"""Quick evaluations of frozen self-supervised features: weighted kNN and a logistic-regression probe.

These are the two numbers SSL libraries report beside training (lightly, solo-learn); the full
SGD-trained ``linear_probe`` method is separate. Both return a fraction in [0, 1], not a percent.

kNN references (read for this module): lightly ``lightly/utils/benchmarking/knn.py``
``knn_predict`` (from the MoCo CIFAR demo; defaults k=200, T=0.1 of InstDisc, Wu et al. 2018) and
solo-learn ``solo/utils/knn.py`` ``WeightedKNNClassifier`` (cosine branch, chunked over test rows).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

LINEAR_PROBE_C = 1.0
LINEAR_PROBE_MAX_ITER = 1000


def _features(x: Any, what: str) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty (N, D) matrix, got shape {tuple(x.shape)}")
    return x


def _labels(y: Any, n: int, what: str) -> Tensor:
    """int64 labels; unlabeled targets (-1) are refused, not silently counted as wrong."""
    y = torch.as_tensor(y).detach()
    if y.shape != (n,) or y.dtype.is_floating_point or y.dtype == torch.bool or int(y.min()) < 0:
        raise ValueError(f"{what} must be {n} non-negative integer labels, got {y.dtype} {tuple(y.shape)}")
    return y.long()


def _train_test(train_features: Any, train_labels: Any, test_features: Any) -> tuple[Tensor, Tensor, Tensor]:
    train, test = _features(train_features, "train_features"), _features(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train and test features differ in width: {train.shape[1]} vs {test.shape[1]}")
    return train, _labels(train_labels, train.shape[0], "train_labels"), test


def _unit_rows(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


@torch.no_grad()
def knn_predict(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor,
    k: int = 200, temperature: float = 0.1, num_classes: int | None = None, chunk: int = 1024,
) -> Tensor:
    """Weighted-kNN class of each test row (int64 [N_test]).

    Cosine similarity of l2-normalised features; the k most similar train rows (all of them if
    k > N_train, as solo-learn) vote for their labels with weight exp(sim / T); the top score wins,
    ties to the lowest class index. Test rows go in chunks of ``chunk``, so memory is
    ``chunk x N_train`` similarities, never N_test x N_train. Each row's weights are computed as
    exp((sim - max sim) / T), which rescales its class scores by one positive factor (the same
    argmax as lightly's / solo-learn's exp(sim / T)) but cannot overflow at small T.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn: k must be a positive integer, got {k!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"knn: chunk must be a positive integer, got {chunk!r}")
    if not temperature > 0:
        raise ValueError(f"knn: temperature must be > 0, got {temperature!r}")
    train, labels, test = _train_test(train_features, train_labels, test_features)
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.max()) >= classes:
        raise ValueError(f"knn: train label {int(labels.max())} is not below num_classes={classes}")
    with torch.autocast(device_type=train.device.type, enabled=False):
        train, test = _unit_rows(train), _unit_rows(test.to(train.device))
        labels = labels.to(train.device)
        k = min(k, train.shape[0])
        predictions = []
        for start in range(0, test.shape[0], chunk):
            similarity = test[start : start + chunk] @ train.T
            top, index = similarity.topk(k, dim=1)
            weights = ((top - top[:, :1]) / temperature).exp()
            scores = torch.zeros(top.shape[0], classes, device=train.device).scatter_add_(1, labels[index], weights)
            predictions.append(scores.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
    k: int = 200, temperature: float = 0.1, num_classes: int | None = None, chunk: int = 1024,
) -> float:
    """Top-1 accuracy of :func:`knn_predict` on the test set (a fraction)."""
    predicted = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes, chunk)
    truth = _labels(test_labels, predicted.shape[0], "test_labels")
    return float((predicted.cpu() == truth.cpu()).double().mean())


def linear_probe_accuracy(
    train_features: Tensor | np.ndarray, train_labels: Tensor | np.ndarray,
    test_features: Tensor | np.ndarray, test_labels: Tensor | np.ndarray,
    *, C: float = LINEAR_PROBE_C, max_iter: int = LINEAR_PROBE_MAX_ITER,
) -> float:
    """Test accuracy of a logistic-regression probe on frozen features (a fraction).

    scikit-learn: StandardScaler fitted on the train features, then multinomial
    ``LogisticRegression(solver="lbfgs", C=C, max_iter=max_iter)`` (L2 penalty; defaults C=1.0,
    max_iter=1000). lbfgs has no
    randomness, so the result is deterministic for given inputs. A ConvergenceWarning, if
    max_iter is reached, is left to the caller to see.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, labels, test = (t.cpu() for t in _train_test(train_features, train_labels, test_features))
    truth = _labels(test_labels, test.shape[0], "test_labels").cpu()
    if labels.unique().numel() < 2:
        raise ValueError("linear probe: the train labels must have at least two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, solver="lbfgs"))
    probe.fit(train.double().numpy(), labels.numpy())
    return float(np.mean(probe.predict(test.double().numpy()) == truth.numpy()))
