"""Classification metrics (xpcnn/metrics.py): right answers counted on every backend, the
confusion matrix on the host."""

from __future__ import annotations

import numpy as np
import pytest

from xpcnn import backend
from xpcnn.metrics import confusion_matrix, count_correct, per_class, per_class_table


def test_right_answers_are_counted_on_the_device(to_target):
    logits = to_target(np.array([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 3.0, 2.0]]), "float32")
    labels = to_target(np.array([1, 0, 0, 2]))
    counted = count_correct(logits, labels)
    assert counted.shape == () and backend.dtype_name(counted.dtype) == "float32"
    assert float(backend.to_numpy(counted)) == 2.0


def test_the_confusion_matrix_counts_true_against_predicted():
    counts = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_precision_recall_and_f1_of_each_class_and_their_mean():
    counts = confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 1]), 3)
    scores = per_class(counts, ["a", "b", "c"])
    a, b, c = scores["classes"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, 0.5, 2) and abs(a["f1"] - 2 / 3) < 1e-12
    assert (b["precision"], b["recall"]) == (0.5, 1.0) and abs(b["f1"] - 2 / 3) < 1e-12
    assert c == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # never predicted
    assert abs(scores["macro"]["recall"] - 0.5) < 1e-12
    table = per_class_table(scores).splitlines()
    assert table[0].split() == ["class", "precision", "recall", "f1", "support"] and table[-1].startswith("mean")
    assert table[1].split() == ["a", "100.00%", "50.00%", "66.67%", "2"]


def test_the_mean_leaves_out_a_class_with_no_image_and_no_prediction_as_scikit_learn_does():
    """A folder's class of one picture is only trained on: every test image right must not
    read as a mean of 75 %."""
    counts = confusion_matrix(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 2]), 4)  # class 3: no image, no prediction
    scores = per_class(counts, ["a", "b", "c", "d"])
    assert scores["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert scores["classes"][3] == {"class": "d", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    predicted_only = per_class(confusion_matrix(np.array([0, 0]), np.array([0, 1]), 3), ["a", "b", "c"])
    assert predicted_only["macro"]["precision"] == 0.5  # b, predicted but absent, counts: a wrong answer named it
    assert per_class(np.zeros((2, 2)), ["a", "b"])["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_the_table_s_columns_stay_in_line_when_a_rate_is_100_percent():
    scores = per_class(np.array([[8, 0], [8, 0]]), ["zero", "one"])  # zero: recall 100%, one: nothing found
    lines = per_class_table(scores).splitlines()
    assert len({len(line) for line in lines[:-1]}) == 1  # the mean row has no support column
    for column in ("recall", "f1"):
        end = lines[0].index(column) + len(column)
        assert all(line[end - 1] == "%" for line in lines[1:]), (column, lines)


@pytest.mark.parametrize("labels, predictions, classes, error, message", [
    # a negative label counted as the last class; the rest failed inside NumPy's indexing
    ([0, -1], [0, 1], 3, ValueError, r"confusion_matrix labels must be in \[0, 3\); the one at index 1 is -1"),
    ([0, 1], [0, 3], 3, ValueError, r"confusion_matrix predictions must be in \[0, 3\); the one at index 1 is 3"),
    ([0, 1, 2], [0, 1], 3, ValueError, "confusion_matrix: 3 labels but 2 predictions"),
    ([0.0, 1.0], [0, 1], 3, TypeError, r"confusion_matrix labels must be integers \(class indices\), got float64"),
    ([[0, 1]], [[0, 1]], 3, ValueError, r"confusion_matrix labels must be \(n,\) class indices, got shape \(1, 2\)"),
    ([0, 1], [0, 1], 2.0, TypeError, "confusion_matrix classes must be an integer, got 2.0"),
])
def test_the_confusion_matrix_refuses_what_is_no_class_index(labels, predictions, classes, error, message):
    with pytest.raises(error, match=message):
        confusion_matrix(labels, predictions, classes)


def test_per_class_needs_a_name_for_each_class_and_the_table_its_result():
    counts = confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 1]), 3)
    with pytest.raises(ValueError, match="per_class: 3 classes in the confusion matrix but 2 names"):
        per_class(counts, ["a", "b"])  # class c was dropped, silently
    with pytest.raises(ValueError, match=r"per_class takes a confusion matrix \(K, K\), got shape \(3,\)"):
        per_class(counts[0], ["a", "b", "c"])
    with pytest.raises(TypeError, match=r"per_class_table takes what per_class\(\) or evaluate\(\) returns "
                                        r"\(\"classes\" and \"macro\"\), got a dict of \['accuracy'\]"):
        per_class_table({"accuracy": 1.0})  # was KeyError: 'classes'
