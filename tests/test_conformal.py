"""Conformal sets and calibration in numpy: the coverage promise, agreement with MAPIE and crepes, ECE, temperature."""

import numpy as np
import pytest
from helpers import fixed_scores

from easytransfer.evaluate.calibration import (
    Calibration,
    fit_calibration,
)
from easytransfer.evaluate.conformal import ConformalCalibration, conformal_quantile, evaluate_sets, label_scores


class _Fixed:
    """A prefit classifier whose 'features' are already its probabilities (so MAPIE / crepes see our scores)."""

    def __init__(self, n_classes):
        self.classes_ = np.arange(n_classes)
        self.n_features_in_ = n_classes

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=float)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", classifier_tags=ClassifierTags(), target_tags=TargetTags(required=True))


@pytest.mark.parametrize("score", ["lac", "aps"])
@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_mean_coverage_over_random_splits_is_within_the_promise(score, alpha):
    # over random calibration / test splits of a fixed population, mean coverage lies in
    # [1 - alpha, 1 - alpha + 1/(n + 1)]; a quantile without the (n + 1) correction falls 1/(n+1) = 0.02 short
    probs, targets = fixed_scores()
    n_calib, n_splits = 50, 1000
    rng = np.random.default_rng(1)
    coverages = []
    for _ in range(n_splits):
        order = rng.permutation(len(targets))
        calib, test = order[:n_calib], order[n_calib:]
        cp = ConformalCalibration.fit(probs[calib], targets[calib], score=score, alpha=alpha, allow_empty=True)
        sets = cp.prediction_sets(probs[test])
        coverages.append(sets[np.arange(len(test)), targets[test]].mean())
    coverages = np.asarray(coverages)
    tolerance = 4 * coverages.std() / np.sqrt(n_splits)  # four standard errors of the mean
    assert 1 - alpha - tolerance <= coverages.mean() <= 1 - alpha + 1 / (n_calib + 1) + tolerance


def test_mondrian_covers_each_class():
    probs, targets = fixed_scores(n_classes=3)
    hard = np.flatnonzero((targets == 2) & (np.random.default_rng(3).random(len(targets)) < 0.3))
    probs[hard] = np.roll(probs[hard], 1, axis=1)  # class 2 is often confidently wrong: global sets under-cover it
    rng = np.random.default_rng(2)
    per_class = {False: [], True: []}
    for _ in range(300):
        order = rng.permutation(len(targets))
        calib, test = order[:300], order[300:]
        for mondrian in (False, True):
            cp = ConformalCalibration.fit(probs[calib], targets[calib], alpha=0.1, mondrian=mondrian)
            result = evaluate_sets(cp.prediction_sets(probs[test]), targets[test], ["a", "b", "c"], alpha=0.1)
            per_class[mondrian].append(result.per_class_coverage["c"])
    assert np.mean(per_class[True]) >= 0.9 - 0.01
    assert np.mean(per_class[False]) < 0.9 - 0.02


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_sets_equal_mapie(alpha):
    # MAPIE's "aps" always randomises its calibration scores, so only "lac" is compared with it (crepes: both)
    from mapie.classification import SplitConformalClassifier

    probs, targets = fixed_scores(n=600)
    calib, test = slice(0, 300), slice(300, None)
    mapie = SplitConformalClassifier(_Fixed(probs.shape[1]), confidence_level=1 - alpha, conformity_score="lac",
                                     prefit=True).conformalize(probs[calib], targets[calib])
    _, mapie_sets = mapie.predict_set(probs[test])
    ours = ConformalCalibration.fit(probs[calib], targets[calib], alpha=alpha, allow_empty=True)
    np.testing.assert_array_equal(ours.prediction_sets(probs[test]), mapie_sets[:, :, 0])


def _aps_for_crepes(probs, classes=None, y=None):
    """crepes' non-conformity function protocol: every label's score, or the true label's when `y` is given."""
    scores = label_scores(probs, "aps")
    return scores if y is None else scores[np.arange(len(y)), np.asarray(y, dtype=int)]


@pytest.mark.parametrize("score", ["lac", "aps"])
@pytest.mark.parametrize("mondrian", [False, True])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_sets_equal_crepes_including_mondrian(score, mondrian, alpha):
    from crepes import WrapClassifier

    probs, targets = fixed_scores(n=600, n_classes=3)
    calib, test = slice(0, 300), slice(300, None)
    crepes = WrapClassifier(_Fixed(3))
    crepes.fitted, crepes.fitted_ = True, True
    extra = {} if score == "lac" else {"nc": _aps_for_crepes}  # crepes' default "hinge" is 1 - p(true): our "lac"
    crepes.calibrate(probs[calib], targets[calib], class_cond=mondrian, **extra)
    crepes_sets = crepes.predict_set(probs[test], confidence=1 - alpha, smoothing=False, labels=False)
    ours = ConformalCalibration.fit(probs[calib], targets[calib], score=score, alpha=alpha, mondrian=mondrian,
                                    allow_empty=True)
    np.testing.assert_array_equal(ours.prediction_sets(probs[test]), np.asarray(crepes_sets).astype(bool))


def test_quantile_uses_the_n_plus_one_correction():
    scores = np.arange(1, 20) / 20  # n = 19
    assert conformal_quantile(scores, 0.1) == scores[17]  # ceil(20 * 0.9) = 18th smallest, not ceil(19 * 0.9) = 18
    assert conformal_quantile(scores, 0.2) == scores[15]  # ceil(20 * 0.8) = 16th, where n(1 - alpha) would give 16
    assert conformal_quantile(np.arange(1, 10) / 10, 0.25) == 0.8  # ceil(10 * 0.75) = 8th; ceil(9 * 0.75) = 7th


def test_empty_sets_become_the_top_label_unless_allowed():
    cp = ConformalCalibration.fit(np.array([[0.99, 0.01]] * 20), np.zeros(20, dtype=int), alpha=0.1)
    probs = np.array([[0.5, 0.5], [0.3, 0.7]])
    assert cp.prediction_sets(probs).sum(axis=1).tolist() == [1, 1]
    assert cp.prediction_sets(probs)[1].tolist() == [False, True]
    empty = ConformalCalibration.fit(np.array([[0.99, 0.01]] * 20), np.zeros(20, dtype=int), alpha=0.1,
                                     allow_empty=True)
    assert empty.prediction_sets(probs).sum() == 0


def test_aps_scores_accumulate_ranked_probabilities():
    np.testing.assert_allclose(label_scores(np.array([[0.2, 0.5, 0.3]]), "aps"), [[1.0, 0.5, 0.8]])
    with pytest.raises(ValueError, match="score must be one of"):
        label_scores(np.ones((1, 2)), "raps")


def test_records_round_trip():
    probs, targets = fixed_scores(n=50)
    cp = ConformalCalibration.fit(probs, targets, score="aps", mondrian=True, alpha=0.2)
    assert ConformalCalibration.from_dict(cp.to_dict()) == cp
    cal = fit_calibration(np.log(probs), targets, "isotonic")
    assert Calibration.from_dict(cal.to_dict()) == cal
