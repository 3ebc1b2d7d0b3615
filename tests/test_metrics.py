"""Classification metrics (xpcnn/metrics.py): right answers counted on every backend, the
confusion matrix on the host."""

from __future__ import annotations

import numpy as np

from xpcnn import backend
from xpcnn.metrics import confusion_matrix, count_correct


def test_right_answers_are_counted_on_the_device(to_target):
    logits = to_target(np.array([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 3.0, 2.0]]), "float32")
    labels = to_target(np.array([1, 0, 0, 2]))
    counted = count_correct(logits, labels)
    assert counted.shape == () and backend.dtype_name(counted.dtype) == "float32"
    assert float(backend.to_numpy(counted)) == 2.0


def test_the_confusion_matrix_counts_true_against_predicted():
    counts = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
