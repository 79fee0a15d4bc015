import numpy as np
import pytest
from sklearn.metrics import classification_report

from easytransfer.interpret import per_class_report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    targs = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.6, targs, rng.integers(0, 3, 200))  # class 3 is never predicted
    classes = ["a", "b", "c", "d"]
    ours = per_class_report(targs, preds, classes)
    theirs = classification_report(targs, preds, target_names=classes, output_dict=True, zero_division=0)
    for name in classes + ["macro avg", "weighted avg"]:
        for col, key in [("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")]:
            assert ours.loc[name, col] == pytest.approx(theirs[name][key]), (name, col)
    assert ours.loc["macro avg", "accuracy"] == pytest.approx(theirs["accuracy"])
