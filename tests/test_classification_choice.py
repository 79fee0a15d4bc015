"""The frozen stage's choice of input size and pooling: the margin rule's outcomes, what the user fixed, and the
chosen settings carried into fine-tuning and the bundle."""

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from fastai.torch_core import set_seed

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.errors import EasyTransferError
from easytransfer.models.pooling import global_pool_type
from easytransfer.tasks.classification import choice as choice_module
from easytransfer.tasks.classification.choice import (
    LARGE_INPUT_AUG,
    LARGE_INPUT_DECAY,
    LARGE_INPUT_EPOCHS,
    LARGE_INPUT_POOL,
    Candidate,
    RecipeChoice,
    candidates_for,
    pick_candidate,
)
from easytransfer.train.rates import DEFAULT_DECAY, DEFAULT_TUNE_EPOCHS

BASE, BASE_MAX, LARGE, LARGE_MAX = Candidate(224, "avg"), Candidate(224, "max"), Candidate(448, "avg"), \
    Candidate(448, "max")


def _noisy(mean: float, n: int = 60, seed: int = 0) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(mean, 0.3, n))


# ------------------------------------------------------------------------------------------------------- the rule


def test_the_baseline_stays_when_no_candidate_beats_it_by_the_margin():
    base = _noisy(0.6)
    losses = {BASE: base, LARGE: base - 0.01 + np.random.default_rng(1).normal(0, 0.2, len(base))}
    winner, gains = pick_candidate(losses, BASE)
    assert winner == BASE
    assert gains[LARGE] < 2


def test_a_candidate_better_by_more_than_the_margin_replaces_the_baseline():
    base = _noisy(0.6)
    winner, gains = pick_candidate({BASE: base, LARGE: base * 0.5}, BASE)
    assert winner == LARGE and gains[LARGE] > 2


def test_among_candidates_that_clear_the_margin_the_lowest_loss_wins():
    base = _noisy(0.6)
    winner, _ = pick_candidate({BASE: base, LARGE: base * 0.5, LARGE_MAX: base * 0.4, BASE_MAX: base * 0.45}, BASE)
    assert winner == BASE_MAX  # 448 / max is lower still, but it changes both settings


def test_a_larger_size_must_win_with_the_baselines_pooling():
    # flowers5 at 20 per class: 448 / max cleared the margin, 448 / avg did not, and fine-tuning at 448 px lost
    base = _noisy(0.6)
    noise = np.random.default_rng(1).normal(0, 0.2, len(base))
    winner, gains = pick_candidate({BASE: base, LARGE: base - 0.01 + noise, LARGE_MAX: base * 0.5}, BASE)
    assert gains[LARGE_MAX] > 2 > gains[LARGE] and winner == BASE


def test_the_margin_is_in_standard_errors_so_the_same_gain_counts_on_more_images():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 1.0, 400)
    candidate = base - 0.05 + rng.normal(0, 0.35, 400)  # a small gain, noisy per image
    few = {BASE: base[:20], LARGE: candidate[:20]}
    many = {BASE: base, LARGE: candidate}
    assert pick_candidate(few, BASE)[0] == BASE
    assert pick_candidate(many, BASE)[0] == LARGE


def test_the_choice_survives_its_dictionary_form_and_says_why_in_one_line():
    scores = (choice_module.CandidateScore(BASE, 0.68, 0.7, 0.0), choice_module.CandidateScore(LARGE, 0.32, 0.9, 5.6))
    choice = RecipeChoice(448, "max", "none", 0.3, BASE, LARGE, scores, 2.0, 100, 100, 15.0, 10)
    assert RecipeChoice.from_dict(choice.to_dict()) == choice
    older = {k: v for k, v in choice.to_dict().items() if k != "epochs"}  # a bundle from before epochs were chosen
    assert RecipeChoice.from_dict(older).epochs == DEFAULT_TUNE_EPOCHS
    line = str(choice)
    assert "chose 448 px / max pooling" in line and "5.6 SE > 2" in line and "pools by max" in line
    assert "10 epochs" in line
    assert "\n" not in line
    kept = RecipeChoice(224, "avg", "light", 0.1, BASE, BASE, scores[:1], 2.0, 100, 100, 15.0)
    assert "kept the model's 224 px / avg pooling" in str(kept)


# ----------------------------------------------------------------------------------------------- with a learner


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("choice") / "images", classes=("a", "b"), per_class=6)


def _learner(folder, *, data=None, **kwargs):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=4, **(data or {}))
    set_seed(0)
    return transfer_learner(dls, "test_efficientnet", pretrained=False, **kwargs)


def test_settings_the_user_gave_are_not_candidates(folder):
    assert _learner(folder).free_settings == ("size", "pool", "aug")
    assert _learner(folder, data={"size": 64}).free_settings == ("pool", "aug")
    assert _learner(folder, size=64, pool="max").free_settings == ("aug",)
    baseline, candidates = candidates_for(_learner(folder))
    size = baseline.size
    assert candidates == [Candidate(size, "avg"), Candidate(size, "max"), Candidate(2 * size, "avg"),
                          Candidate(2 * size, "max")]
    learn = _learner(folder, data={"aug": "flips"}, pool="avg")
    baseline, candidates = candidates_for(learn)
    assert baseline == Candidate(learn.dls.recipe.size, "avg")
    assert candidates == [baseline, Candidate(2 * learn.dls.recipe.size, "avg")]


def test_the_defaults_spelled_out_run_the_recipe_without_a_choice(folder):
    learn = _learner(folder, data={"size": 64, "aug": "light"}, pool="avg")
    learn.fit_frozen(1)
    assert learn.choice is None and learn.dls.recipe.size == 64
    with pytest.raises(EasyTransferError, match="nothing to choose"):
        learn.fit_frozen(1, choose=True)


def _force(monkeypatch, winner):
    def rule(losses, baseline, margin_se=2.0):
        return winner(baseline), {c: (9.0 if c == winner(baseline) else 0.0) for c in losses}
    monkeypatch.setattr(choice_module, "pick_candidate", rule)


def test_a_larger_input_chosen_runs_fine_tuning_and_the_bundle_at_it(folder, tmp_path, monkeypatch):
    _force(monkeypatch, lambda base: Candidate(2 * base.size, "avg"))  # at a larger input the head pools by max
    learn = _learner(folder, data={"size": 48})  # the size given: only the pooling is chosen ...
    learn.free_settings = ("size", "pool", "aug")  # ... unless the size is free too (48 and 96 px keep it fast)
    learn.fit_frozen(1)
    choice = learn.choice
    assert (choice.size, choice.pool, choice.aug, choice.decay) == (96, LARGE_INPUT_POOL, LARGE_INPUT_AUG,
                                                                    LARGE_INPUT_DECAY)
    assert choice.best == Candidate(96, "avg")
    assert learn.dls.recipe.size == 96 and learn.dls.recipe.aug == LARGE_INPUT_AUG
    assert global_pool_type(learn.model) == "max" and learn.head_config.pool == "max"
    assert learn.default_decay() == LARGE_INPUT_DECAY
    assert choice.epochs == learn.default_epochs() == LARGE_INPUT_EPOCHS > DEFAULT_TUNE_EPOCHS
    assert learn.feature_cache is not None  # the chosen candidate's features are the frozen stage's cache
    assert len(learn.fit_history) == 1
    learn.fit_frozen(1)
    assert learn.choice is choice  # chosen once
    learn.unfreeze()
    learn.fit_discriminative(1)
    assert learn.history["lr_3"].iloc[-1] / learn.history["lr_4"].iloc[-1] == pytest.approx(LARGE_INPUT_DECAY)
    learn.export(tmp_path / "model")
    predictor = load_model(tmp_path / "model")
    assert predictor.config.preprocessing.size == 96
    assert predictor.config.head.pool == "max"
    assert predictor.config.task_config.choice == choice
    image = next(folder.glob("a/*.jpg"))
    np.testing.assert_allclose(predictor.predict(image)[2], learn.predict(image)[2].numpy(), atol=1e-5)


def test_when_the_baseline_is_kept_nothing_changes_but_the_record(folder, monkeypatch):
    _force(monkeypatch, lambda base: base)
    learn = _learner(folder, data={"size": 48})
    learn.fit_frozen(1)
    assert learn.choice.chosen == learn.choice.baseline == Candidate(48, "avg")
    assert learn.dls.recipe.size == 48 and learn.dls.recipe.aug == "light" and learn.head_config.pool is None
    assert learn.default_decay() == DEFAULT_DECAY
    learn.unfreeze()
    learn.fit_discriminative(patience=None)  # the recipe's number of epochs
    assert (learn.history["phase"] == "discriminative").sum() == learn.default_epochs() == DEFAULT_TUNE_EPOCHS


def test_a_kept_baseline_trains_the_same_head_as_the_settings_spelled_out(folder, monkeypatch):
    # the choice's features are the frozen stage's, and neither feature pass draws from the run's random state:
    # a run whose choice keeps the model's settings is the run that gave them (same batches, same head)
    _force(monkeypatch, lambda base: base)
    heads = []
    for data, given in (({"size": 48}, {}), ({"size": 48, "aug": "light"}, {"pool": "avg"})):
        learn = _learner(folder, data=data, **given)
        learn.fit_frozen(2)
        assert (learn.choice is None) == bool(given)
        heads.append([p.detach().clone() for p in learn.model.classifier.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*heads))


def test_an_augmentation_the_user_gave_is_kept_at_a_larger_input(folder, monkeypatch):
    _force(monkeypatch, lambda base: Candidate(2 * base.size, LARGE_INPUT_POOL))
    learn = _learner(folder, data={"size": 48, "aug": "flips"})
    learn.free_settings = ("size", "pool")
    learn.fit_frozen(1)
    assert learn.dls.recipe.size == 96 and learn.dls.recipe.aug == "flips"


def test_a_pooling_the_user_gave_is_kept_at_a_larger_input(folder, monkeypatch):
    _force(monkeypatch, lambda base: Candidate(2 * base.size, base.pool))
    learn = _learner(folder, data={"size": 48}, pool="avg")
    learn.free_settings = ("size", "aug")
    learn.fit_frozen(1)
    assert learn.choice.chosen == Candidate(96, "avg") and global_pool_type(learn.model) == "avg"


def test_choosing_draws_nothing_from_the_runs_random_state_and_repeats(folder):
    choices = []
    for _ in range(2):
        learn = _learner(folder, data={"size": 48})
        before = torch.get_rng_state()
        choice_module.choose_for_frozen_stage(learn, 1, required=True)
        assert torch.equal(torch.get_rng_state(), before)  # the batches after it are the run's own
        choices.append(learn.choice)
    assert [s.cv_loss for s in choices[0].scores] == [s.cv_loss for s in choices[1].scores]


def test_large_data_is_chosen_on_a_stratified_sample_and_the_frozen_stage_still_sees_every_image(folder, monkeypatch):
    monkeypatch.setattr(choice_module, "MAX_TRAIN", 4)
    monkeypatch.setattr(choice_module, "MAX_VALID", 2)
    learn = _learner(folder, data={"size": 48})
    n_train, n_valid = len(learn.dls.train_ds), len(learn.dls.valid_ds)
    assert n_train > 4 and n_valid >= 2
    learn.fit_frozen(1)
    assert (learn.choice.n_train, learn.choice.n_valid) == (4, 2)  # both classes kept: 2 + 2 and 1 + 1
    assert learn.feature_cache.train.shape[1] == n_train and learn.feature_cache.valid.shape[0] == n_valid


@pytest.mark.parametrize("larger_wins", [False, True])
def test_the_larger_size_is_measured_on_a_bounded_sample_and_the_frozen_stage_sees_every_image(
        folder, monkeypatch, larger_wins):
    # the pass at the model's size covers every image (the frozen stage's cache when kept); the larger size, four
    # times the pixels, at most MAX_LARGER images, and every candidate is scored on those same images
    monkeypatch.setattr(choice_module, "MAX_LARGER", 6)
    _force(monkeypatch, (lambda base: Candidate(2 * base.size, "avg")) if larger_wins else (lambda base: base))
    scored = []
    real = choice_module._probe_losses
    monkeypatch.setattr(choice_module, "_probe_losses", lambda cache, n: scored.append(
        (cache.train.shape[1], cache.valid.shape[0], cache.train_targets.tolist(), cache.valid_targets.tolist()))
        or real(cache, n))
    learn = _learner(folder, data={"size": 48})
    learn.free_settings = ("size", "pool", "aug")
    n_train, n_valid = len(learn.dls.train_ds), len(learn.dls.valid_ds)
    assert n_train + n_valid > 6
    learn.fit_frozen(1)
    assert (learn.choice.n_train, learn.choice.n_valid) == (4, 2)  # 6 in the data's shares
    assert len(scored) == 4 and len(set(map(str, scored))) == 1  # the same images (targets, order) for each
    assert learn.dls.recipe.size == (96 if larger_wins else 48)
    assert learn.feature_cache.train.shape[1] == n_train and learn.feature_cache.valid.shape[0] == n_valid
