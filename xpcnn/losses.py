"""Softmax cross-entropy, the classification loss."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device


class SoftmaxCrossEntropy:
    """Mean over the batch of -log softmax(logits)[label].

    Uses log-sum-exp with the row maximum subtracted, so logits of any magnitude give a
    finite loss and gradient. Labels must be integers in [0, K): checked here unless
    `check_labels=False`, which the training loop uses, because the check moves a scalar
    from the device every step and its labels were checked on the host (datasets.Dataset).
    """

    def __init__(self, check_labels: bool = True) -> None:
        if not isinstance(check_labels, bool):
            raise TypeError(f"SoftmaxCrossEntropy check_labels must be True or False, got {check_labels!r}")
        self.check_labels = check_labels
        self._cache: Any = None

    def forward(self, logits: Any, labels: Any) -> Any:
        """logits: (N, K) floating, labels: (N,) integer -> 0-d loss."""
        xp = array_namespace(logits, labels)
        if logits.ndim != 2 or labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                "SoftmaxCrossEntropy: expected logits (N, K) and labels (N,), got "
                f"{tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        if not xp.isdtype(logits.dtype, "real floating"):
            raise TypeError(f"SoftmaxCrossEntropy: logits must be floating, got {logits.dtype}")
        if not xp.isdtype(labels.dtype, "integral"):
            raise TypeError(f"SoftmaxCrossEntropy: labels must be integers, got {labels.dtype}")
        n, k = logits.shape
        if n == 0:
            raise ValueError("SoftmaxCrossEntropy: an empty batch (0 rows) has no mean loss")
        if self.check_labels and n and bool(xp.any((labels < 0) | (labels >= k))):
            low, high = int(xp.min(labels)), int(xp.max(labels))
            raise ValueError(f"SoftmaxCrossEntropy: labels must be in [0, {k}) for {k} logits, got [{low}, {high}]")
        classes = xp.arange(k, dtype=labels.dtype, device=device(labels))
        one_hot = xp.astype(xp.reshape(labels, (n, 1)) == xp.reshape(classes, (1, k)), logits.dtype)
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sum_exp = xp.sum(exp, axis=1, keepdims=True)
        log_likelihood = xp.sum(one_hot * shifted, axis=1) - xp.log(xp.reshape(sum_exp, (n,)))
        self._cache = (exp / sum_exp, one_hot)
        return -xp.mean(log_likelihood)

    def backward(self) -> Any:
        """d(loss)/d(logits) = (softmax - one_hot) / N, from the last forward."""
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward() needs a preceding forward()")
        (probabilities, one_hot), self._cache = self._cache, None
        return (probabilities - one_hot) / probabilities.shape[0]

    def __repr__(self) -> str:
        return "SoftmaxCrossEntropy()" if self.check_labels else "SoftmaxCrossEntropy(check_labels=False)"
