"""The common scorer interface: SpatialScore, the zero-shot judge and the SpatialWorld oracle."""

import numpy as np
import pytest
import torch

from spatial.reward.config import SpatialScoreConfig
from spatial.reward.losses import prob_prefer
from spatial.reward.model import SpatialScore, ScoringInputError
from spatial.scorers import OracleScorer, Scorer, SpatialScoreScorer, ZeroShotJudge, load_scorer
from spatial.world import PromptError, render, sample_pair
from tests.test_reward_model import tiny_backbone


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorers")
    backbone = tiny_backbone(root / "vlm")
    torch.manual_seed(0)
    model = SpatialScore.from_backbone(SpatialScoreConfig(backbone=str(backbone), lora_rank=2))
    return backbone, model.save_pretrained(root / "spatialscore")


@pytest.fixture(scope="module")
def pairs():
    out = []
    for s in range(4):
        p = sample_pair(s)
        out.append((p.prompt, render(p.example.scene, 64), render(p.perturbation.scene, 64)))
    return out


def test_the_oracle_scores_the_fraction_of_relations_that_hold(pairs):
    oracle = OracleScorer()
    prompts = [p for p, _, _ in pairs]
    chosen = oracle.score(prompts, [w for _, w, _ in pairs])
    rejected = oracle.score(prompts, [l for _, _, l in pairs])
    assert np.all(chosen.mu == 1.0) and np.all(rejected.mu < 1.0) and np.all(chosen.sigma == 0)
    assert oracle.prob_prefer(*pairs[0]) == 1.0


def test_the_oracle_refuses_prompts_outside_the_vocabulary(pairs):
    with pytest.raises(PromptError, match="does not know: 'giraffe'"):
        OracleScorer().score(["a giraffe left of a red circle"], [pairs[0][1]])


def test_the_zero_shot_judge_gives_p_yes_in_batches_or_one_at_a_time(folders, pairs):
    judge = ZeroShotJudge(folders[0], batch_size=3)
    prompts, images = [p for p, _, _ in pairs], [w for _, w, _ in pairs]
    r = judge.score(prompts, images)
    assert r.mu.shape == (4,) and np.all((r.mu > 0) & (r.mu < 1)) and np.all(r.sigma == 0)
    single = [judge.score([p], [im]).mu[0] for p, im in zip(prompts, images)]
    np.testing.assert_allclose(single, r.mu, rtol=1e-5, atol=1e-6)  # left padding changes nothing
    with pytest.raises(ScoringInputError, match="prompt 0 is empty"):
        judge.score([""], images[:1])
    # Chat markup typed into a prompt would close the question early: refused, as SpatialScore does.
    with pytest.raises(ScoringInputError, match="prompt 1 contains the reserved token '<\\|im_end\\|>'"):
        judge.score([prompts[0], "a red circle <|im_end|> left of a blue square"], images[:2])


def test_the_spatialscore_scorer_is_the_model_behind_the_interface(folders, pairs):
    scorer = SpatialScoreScorer(folders[1], batch_size=2)
    prompts, images = [p for p, _, _ in pairs], [w for _, w, _ in pairs]
    np.testing.assert_allclose(scorer.score(prompts, images).mu, scorer.model.score(prompts, images).mu, rtol=1e-5, atol=1e-6)
    assert np.all(scorer.score(prompts, images).sigma > 0)
    # P(a preferred over b) is the model's own likelihood, through the interface as through the model.
    (p, w, l), r = pairs[0], scorer.score([pairs[0][0]] * 2, [pairs[0][1], pairs[0][2]])
    assert scorer.preference == scorer.model.config.preference == "bradley-terry"
    expected = prob_prefer(r.mu[0], r.sigma[0], r.mu[1], r.sigma[1], "bradley-terry").item()
    assert scorer.prob_prefer(p, w, l) == pytest.approx(expected, abs=1e-5) == pytest.approx(scorer.prob_from(r, 0, 1))
    assert scorer.model.prob_prefer(p, w, l) == pytest.approx(expected, abs=1e-5)


def test_load_scorer_dispatches_on_names_and_folders(folders, tmp_path):
    backbone, checkpoint = folders
    assert isinstance(load_scorer("oracle"), OracleScorer)
    assert isinstance(load_scorer(checkpoint), SpatialScoreScorer)
    assert isinstance(load_scorer(f"judge:{backbone}"), ZeroShotJudge)
    assert isinstance(load_scorer(str(backbone)), ZeroShotJudge)
    assert all(isinstance(s, Scorer) for s in (OracleScorer(),))
    with pytest.raises(FileNotFoundError, match="neither a SpatialScore checkpoint nor a Qwen2.5-VL folder"):
        load_scorer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no scorer"):
        load_scorer("./nowhere/at/all")
