"""`python -m training.evaluate reward`: pairwise accuracy with a JSON last line, both orders for pairwise judges."""

import json

import pytest
import torch

from spatial.reward.config import SpatialScoreConfig
from spatial.reward.data import load_pairs
from spatial.reward.evaluate import evaluate
from spatial.reward.model import SpatialScore
from spatial.scorers import OracleScorer, Scorer, load_scorer
from spatial.world import write_pairs
from tests.test_reward_model import tiny_backbone
from training import evaluate as cli


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_pairs")
    write_pairs(out, 12, seed=11, test_fraction=0.5)
    return out


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_oracle_ranks_every_held_out_pair_correctly(pairs_dir, capsys):
    assert cli.main(["reward", "--checkpoint", "oracle", "--pairs", str(pairs_dir)]) == 0
    out = last_json(capsys)
    assert out["accuracy"] == 1.0 and out["n"] == 6 and out["split"] == "test" and out["scorer"] == "oracle"


def test_a_spatialscore_checkpoint_is_evaluated_on_every_pair_of_the_split(pairs_dir, tmp_path, capsys):
    torch.manual_seed(0)
    model = SpatialScore.from_backbone(SpatialScoreConfig(backbone=str(tiny_backbone(tmp_path / "vlm")), lora_rank=2))
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    assert cli.main(["reward", "--checkpoint", str(ckpt), "--pairs", str(pairs_dir), "--split", "all"]) == 0
    out = last_json(capsys)
    assert out["n"] == 12 and out["scorer"] == "spatialscore"
    # The command line reports what the library computes for the same checkpoint and rows.
    direct = evaluate(load_scorer(str(ckpt)), load_pairs(str(pairs_dir), "all"))
    assert out["accuracy"] == direct["accuracy"] and out["ties"] == direct["ties"]


class FirstImageJudge(Scorer):
    """A pairwise judge with total order bias: it always prefers the first image it is shown."""

    name = "first-image"
    pairwise = True

    def score(self, prompts, images):
        raise NotImplementedError("pairwise only")

    def prob_prefer(self, prompt, a, b):
        return 1.0


def test_pairwise_judges_are_scored_in_both_orders_and_for_consistency(pairs_dir):
    rows = load_pairs(str(pairs_dir), "test")
    out = evaluate(FirstImageJudge(), rows)
    assert out["accuracy_chosen_first"] == 1.0 and out["accuracy_chosen_second"] == 0.0
    assert out["consistent_accuracy"] == 0.0 and out["n"] == 6
    assert evaluate(OracleScorer(), rows)["ties"] == 0


def test_bad_arguments_give_one_line_and_a_nonzero_exit(pairs_dir, tmp_path, capsys):
    assert cli.main(["reward", "--checkpoint", "oracle", "--pairs", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot load pairs")
    assert cli.main(["reward", "--checkpoint", str(tmp_path), "--pairs", str(pairs_dir)]) == 1
    assert "neither a SpatialScore checkpoint" in capsys.readouterr().err


def test_auto_split_finds_the_test_split_of_a_parquet_dataset_too(pairs_dir, tmp_path, capsys):
    # The layout an annotation export takes on the Hub: data/{split}-*.parquet, no metadata.jsonl.
    import datasets

    (tmp_path / "data").mkdir()
    for split in ("train", "test"):
        rows = load_pairs(str(pairs_dir), split)
        ds = datasets.Dataset.from_dict(
            {"prompt": [r.prompt for r in rows], "chosen": [r.chosen for r in rows], "rejected": [r.rejected for r in rows]},
            features=datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Image(), "rejected": datasets.Image()}),
        )
        ds.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    assert cli.main(["reward", "--checkpoint", "oracle", "--pairs", str(tmp_path)]) == 0
    out = last_json(capsys)
    assert out["split"] == "test" and out["n"] == 6 and out["accuracy"] == 1.0
