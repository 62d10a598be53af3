"""Metrics against values computed by hand."""
import math

import numpy as np
import pytest

from training.metrics import ccc, classification, mean_std, summarize

CLASSES = ["happy", "angry", "sad"]


def test_classification_by_hand():
    # true: 4 happy, 2 angry, 2 sad. Confusion (rows true, cols pred):
    #   happy [3, 1, 0]   angry [0, 1, 1]   sad [0, 0, 2]
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    m = classification(y_true, y_pred, CLASSES)
    assert m["confusion"] == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert m["wa"] == pytest.approx(6 / 8)
    assert m["recall"] == pytest.approx({"happy": 0.75, "angry": 0.5, "sad": 1.0})
    assert m["uar"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    # precision: happy 3/3, angry 1/2, sad 2/3 -> F1: 6/7, 1/2, 4/5
    assert m["f1"] == pytest.approx((6 / 7 + 0.5 + 0.8) / 3)
    assert m["n"] == 8


def test_absent_class_is_left_out_of_uar_but_counts_in_f1_when_predicted():
    # no "sad" in y_true, but one prediction of sad: UAR over happy/angry, F1 over all three (sad F1 = 0)
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])
    m = classification(y_true, y_pred, CLASSES)
    assert m["recall"]["sad"] is None
    assert m["uar"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_ccc_by_hand():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(t, t) == pytest.approx(1.0)
    assert ccc(t, -t) == pytest.approx(-1.0 * 2 * 1.25 / (1.25 + 1.25 + 25))
    # p = t + 1: cov = var = 1.25, shift 1 -> 2.5 / (2.5 + 1) = 5/7
    assert ccc(t, t + 1) == pytest.approx(5 / 7)
    # p = 2t: cov 2.5, var_p 5, mean shift 2.5 -> 5 / (1.25 + 5 + 6.25)
    assert ccc(t, 2 * t) == pytest.approx(5 / 12.5)
    assert ccc(np.array([1.0, np.nan, 3.0]), np.array([1.0, 5.0, 3.0])) == pytest.approx(1.0)
    assert math.isnan(ccc(np.ones(3), np.ones(3)))


def test_mean_std_and_summary():
    assert mean_std([0.5, 0.7, 0.9]) == pytest.approx({"mean": 0.7, "std": 0.2})
    assert mean_std([0.4]) == {"mean": 0.4, "std": 0.0}
    assert mean_std([None, float("nan")]) == {"mean": None, "std": None}
    folds = [classification(np.array([0, 1]), np.array([0, 1]), CLASSES),
             classification(np.array([0, 1, 2]), np.array([1, 1, 2]), CLASSES)]
    s = summarize(folds)
    assert s["uar"]["mean"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert s["wa"]["std"] == pytest.approx(np.std([1.0, 2 / 3], ddof=1))
    assert s["recall"] == pytest.approx({"happy": 0.5, "angry": 1.0, "sad": 1.0})
