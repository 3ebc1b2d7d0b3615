"""Softmax cross-entropy, the classification loss."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from . import backend
from .checks import flag, number


class SoftmaxCrossEntropy:
    """Mean over the batch of -sum_k target_k log softmax(logits)_k: the target is the
    label's one-hot row, or with `label_smoothing` eps in [0, 1) (1 - eps) one_hot + eps / K,
    as torch.nn.CrossEntropyLoss(label_smoothing=eps) has it.

    Uses log-sum-exp with the row maximum subtracted, so logits of any magnitude give a
    finite loss and gradient. Labels must be integers in [0, K): checked here unless
    `check_labels=False`, which the training loop uses, because the check moves a scalar
    from the device every step and its labels were checked on the host (datasets.Dataset).
    """

    def __init__(self, check_labels: bool = True, label_smoothing: float = 0.0) -> None:
        self.check_labels = flag(check_labels, "SoftmaxCrossEntropy check_labels")
        self.label_smoothing = number(label_smoothing, "SoftmaxCrossEntropy label_smoothing", 0.0, 1.0,
                                      high_included=False)
        self._cache: Any = None

    def forward(self, logits: Any, labels: Any) -> Any:
        """logits: (N, K) floating, labels: (N,) integer -> 0-d loss."""
        try:
            xp = array_namespace(logits, labels)
        except TypeError:  # array_api_compat's message lists the namespaces' module paths
            kinds = " and ".join(f"{type(a).__module__}.{type(a).__name__}" for a in (logits, labels))
            raise TypeError(f"SoftmaxCrossEntropy: logits and labels must be arrays of one backend, got {kinds}; "
                            "move the labels with xpcnn.to_backend(labels, backend, device)") from None
        if device(logits) != device(labels):
            raise ValueError(f"SoftmaxCrossEntropy: logits are on device {device(logits)} but labels on "
                             f"{device(labels)}; move the labels with xpcnn.to_backend(labels, backend, device)")
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
        if self.check_labels and bool(xp.any((labels < 0) | (labels >= k))):
            low, high = int(xp.min(labels)), int(xp.max(labels))
            raise ValueError(f"SoftmaxCrossEntropy: labels must be in [0, {k}) for {k} logits, got [{low}, {high}]")
        # Resolved together, so that the gradient reads what this forward saved.
        forward, gradient = (backend.fast_path(f, logits) for f in (softmax_cross_entropy,
                                                                     softmax_cross_entropy_gradient))
        loss, saved = forward(logits, labels, self.label_smoothing)
        self._cache = (gradient, saved)
        return loss

    def backward(self) -> Any:
        """d(loss)/d(logits) = (softmax - target) / N, from the last forward."""
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward() needs a preceding forward()")
        (gradient, saved), self._cache = self._cache, None
        return gradient(saved)

    def __repr__(self) -> str:
        shown = [*(["check_labels=False"] if not self.check_labels else []),
                 *([f"label_smoothing={self.label_smoothing!r}"] if self.label_smoothing else [])]
        return f"SoftmaxCrossEntropy({', '.join(shown)})"


def softmax_cross_entropy(logits: Any, labels: Any, smoothing: float) -> tuple[Any, Any]:
    """The mean loss (0-d) of logits (N, K) for integer labels (N,) in [0, K), with label
    smoothing `smoothing`, and what softmax_cross_entropy_gradient reads."""
    xp = array_namespace(logits, labels)
    n, k = logits.shape
    classes = xp.arange(k, dtype=labels.dtype, device=device(labels))
    one_hot = xp.astype(xp.reshape(labels, (n, 1)) == xp.reshape(classes, (1, k)), logits.dtype)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = xp.sum(exp, axis=1, keepdims=True)
    target = one_hot  # without smoothing, the arithmetic (and the bits) of the loss before smoothing existed
    if smoothing:
        target = (1 - smoothing) * one_hot + smoothing / k  # each row sums to 1
    log_likelihood = xp.sum(target * shifted, axis=1) - xp.log(xp.reshape(sum_exp, (n,)))
    return -xp.mean(log_likelihood), (exp / sum_exp, target)


def softmax_cross_entropy_gradient(saved: Any) -> Any:
    """d(loss)/d(logits) (N, K) from what softmax_cross_entropy saved."""
    probabilities, target = saved
    return (probabilities - target) / probabilities.shape[0]
