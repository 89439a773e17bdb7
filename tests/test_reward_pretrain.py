"""The toy Qwen2.5-VL's pretraining stage: exact answers, dense grounding targets, a loadable folder."""

import json
import random

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from spatial.reward.pretrain import (ROWS, GroundingHeads, PretrainVLMConfig, QuestionSampler, VLMPretrainer, encode,
                                     grid_words)  # fmt: skip
from spatial.reward.processing import load_processor
from spatial.reward.toy import build_processor
from spatial.world.scene import CLEAR, CLEARLY_NOT, direction_cosine
from spatial.world.vocab import PHRASES

PHRASE_TO_RELATION = {p: r for r, ps in PHRASES.items() for p in ps}


@pytest.fixture(scope="module")
def sampler():
    return QuestionSampler(world_seed=77, n_scenes=40, n_pairs=20, size=64, progress=False)


def test_where_answers_name_the_grid_cell_of_the_object(sampler):
    rng = random.Random(0)
    for _ in range(30):
        q = sampler.sample("where", rng, easy=False)
        name = q.text.removeprefix("where is the ")
        obj = next(o for o in q.scene.objects if o.name == name)
        assert q.answer == grid_words(obj.x, obj.y) and q.answer.split()[0] in ROWS


def test_yes_no_answers_agree_with_the_geometry_and_are_balanced(sampler):
    rng = random.Random(1)
    answers = []
    for _ in range(60):
        q = sampler.sample("yesno", rng, easy=False)
        if not q.clauses:
            continue  # no clear pair in this scene: the sampler fell back to a where question
        by_name = {o.name: o for o in q.scene.objects}
        body = q.text.removeprefix("is the ")
        phrase = next(p for p in sorted(PHRASE_TO_RELATION, key=len, reverse=True) if f" {p} the " in body)
        a, b = body.split(f" {phrase} the ")
        c = direction_cosine(by_name[a].box, by_name[b].box, PHRASE_TO_RELATION[phrase])
        assert (q.answer == "yes" and c >= CLEAR) or (q.answer == "no" and c <= CLEARLY_NOT)
        answers.append(q.answer)
    assert 0.3 < answers.count("yes") / len(answers) < 0.7


def test_labels_cover_only_the_answer_and_grounding_targets_every_image_token_and_mention(sampler):
    processor = build_processor()
    rng = random.Random(2)
    qs = [sampler.sample(t, rng, easy=False) for t in ("where", "yesno", "judge", "judge")]
    batch = encode(processor, qs, "cpu")
    tok = processor.tokenizer
    for i, q in enumerate(qs):
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        assert tok.decode(labelled).split() == (q.answer + " <|im_end|>").split()
    heads = GroundingHeads(hidden=8, grid=4)
    seq = batch["input_ids"].shape[1]
    hidden = torch.randn(4, seq, 8)
    loss, stats = heads.loss(hidden, hidden, hidden, batch, qs, processor)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"aux_cell", "aux_content", "aux_mention", "aux_relation"} <= set(stats)


def test_a_short_pretraining_run_saves_a_qwen2_5_vl_folder_that_loads_like_the_real_one(tmp_path):
    out = tmp_path / "vlm"
    cfg = PretrainVLMConfig(out=str(out), steps=3, batch_size=4, pool=20, pairs=8, eval_every=3, eval_size=4,
                            model='{"hidden": 32, "heads": 2, "kv_heads": 2, "layers": 3, "intermediate": 64, '
                                  '"mrope_section": [2, 3, 3], "vision_hidden": 32, "vision_depth": 1}')  # fmt: skip
    VLMPretrainer(cfg, progress=False).run()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out)
    processor = load_processor(str(out))
    assert model.config.text_config.hidden_size == 32 and "<|image_pad|>" in processor.tokenizer.get_vocab()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and "eval_judge_accuracy" in rows[-1]
    assert not (out / "checkpoint.pt").exists()


def test_bad_pretraining_options_are_refused():
    with pytest.raises(ValueError, match="unknown task 'caption'"):
        PretrainVLMConfig(mix="caption:1").validate()
    with pytest.raises(ValueError, match="model must be a JSON object"):
        PretrainVLMConfig(model="{layers: 6}").validate()
