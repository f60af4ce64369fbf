"""scripts/selection_oracle.py: a search's candidate recipes scored on training images the search never saw."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest

from policysearch.augment.policy import Policy
from policysearch.search.config import SearchConfig
from policysearch.search.domain import DomainFit, OpFit
from policysearch.search.inprocess import run_search
from _scripts import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "selection_oracle.py"
TINY = dict(dataset="digits", train_size=60, splits=2, trials=3, epochs=1, top_n=1, algorithm="optuna", seed=3,
            cpus_per_trial=1.0, max_concurrent=1, min_steps=8, selection_folds=2, selection_repeats=1,
            strengths=(1.0,))


@pytest.fixture(scope="module")
def oracle():
    return load_file(SCRIPT, "selection_oracle")


def test_the_domain_fit_comes_back_from_the_policy_file(oracle):
    fit = DomainFit({"Rotate": OpFit("Rotate", (0.25, 0.5), (0.9, 0.4), 0.25),
                     "Invert": OpFit("Invert", (1.0,), (0.1,), 0.0)}, 0.5, 0.9, 0.1, "")
    back = oracle._fit(json.loads(json.dumps(fit.to_dict())), ["Rotate", "Invert", "FlipLR"])
    assert back.ops == fit.ops and (back.threshold, back.clean_accuracy, back.chance) == (0.5, 0.9, 0.1)
    assert back.unjudged == ()
    weak = DomainFit({}, 0.5, 0.12, 0.1, "too close to chance", ("FlipLR", "Rotate"))
    assert oracle._fit(weak.to_dict(), ["Rotate", "FlipLR"]).unjudged == ("FlipLR", "Rotate")
    assert oracle._spearman([1.0, 2.0, 3.0], [10.0, 30.0, 20.0]) == pytest.approx(0.5)
    assert oracle._spearman([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(0.8660254)  # a tie: mean ranks


def test_the_information_limit_measures_a_pick_on_drawn_images_against_the_others(oracle):
    """A clearly better recipe is found on many images and missed on few; equal recipes cost nothing."""
    rng = np.random.default_rng(0)
    images = 4000
    wrong = np.stack([rng.random(images) < p for p in (0.10, 0.05, 0.10)]).astype(float)  # 0: the reference
    few, many = oracle.information_limit(wrong, 0, [10, 2000], draws=300, confidence=0.8)
    assert few["images"] == 10 and many["images"] == 2000 and many["draws"] == 300
    assert many["lowest_error_regret"] < 0.05 and many["rule_regret"] < 0.05 and many["rule_switched"] > 0.99
    assert few["lowest_error_regret"] > 1.0 and few["rule_regret"] > 1.0
    assert 4.0 < many["reference_regret"] < 6.0  # the reference itself: about 10 - 5 pp behind
    same = oracle.information_limit(np.stack([wrong[0]] * 3), 0, [50], draws=50, confidence=0.8)[0]
    assert same["lowest_error_regret"] == same["rule_regret"] == same["rule_switched"] == 0.0
    with pytest.raises(ValueError, match="need 2 to 3999"):
        oracle.information_limit(wrong, 0, [images], draws=1, confidence=0.8)
    with pytest.raises(ValueError, match="--draws: 0; need at least 1"):
        oracle.information_limit(wrong, 0, [10], draws=0, confidence=0.8)


def test_a_fine_tuned_run_needs_the_preset_that_pretrained_it(oracle, tmp_path, monkeypatch):
    """Without its preset the oracle would hold the pretraining images: refused before any training."""
    run = tmp_path / "run"
    config = SearchConfig(**TINY)
    monkeypatch.setattr(oracle, "read_stored_config",
                        lambda *a, **k: (dataclasses.replace(config, weights=str(tmp_path / "w.pt")), "x"))
    monkeypatch.setattr(oracle, "prepare", lambda c: pytest.fail("prepared"))
    with pytest.raises(SystemExit, match="give the --preset that pretrained them"):
        oracle.main(["--run", str(run)])


def test_every_candidate_is_scored_on_images_outside_the_search_s_subset(oracle, tmp_path):
    run = tmp_path / "run"
    run_search(SearchConfig(**TINY), run, stream=io.StringIO())
    out = tmp_path / "oracle.json"
    name = next(iter(oracle._selection_means(run, 1)))  # a recipe on the first fold
    assert oracle.main(["--run", str(run), "--seeds", "2", "--fold-models", name, "--information-limit", "100",
                        "--draws", "20", "--json", str(out)]) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    selection = oracle._selection_means(run, document["first_pass_folds"])
    chosen = Policy.load(run / "policy.json").metadata["recipe"]["name"]
    assert document["chosen"] == chosen and document["train_images"] == 60
    assert document["oracle_images"] == 1078 - 60 and sum(document["oracle_classes"]) == 1078 - 60
    rows = document["recipes"]
    assert len(rows) == len({r["recipe"] for r in rows}) >= 2 and all(len(r["oracle_errors"]) == 2 for r in rows)
    assert min(r["oracle_regret"] for r in rows) == 0.0 and all(np.isfinite(r["oracle_mean"]) for r in rows)
    assert {r["recipe"] for r in rows} == set(selection)  # every recipe the search compared
    assert document["command"].startswith("python scripts/selection_oracle.py --run ")
    # the fold models retrained as phase 3 trained them give its held-out errors again
    refit = document["fold_models"][name]
    assert refit["folds"] == selection[name][1] and refit["held_out_mean"] == pytest.approx(selection[name][0])
    assert len(refit["oracle"]) == refit["folds"]
    limit = document["information_limit"][0]
    assert (limit["images"], limit["draws"]) == (100, 20) and limit["lowest_error_regret"] >= 0.0
