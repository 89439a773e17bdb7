"""SpatialScore on a tiny Qwen2.5-VL built from a config: pooling, positions, checkpoint folder, inputs."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

from spatial.reward.config import SpatialScoreConfig
from spatial.reward.data import ImageLoadError
from spatial.reward.model import SpatialScore, ScoringInputError
from spatial.reward.processing import REWARD_TOKEN, ImageProcessor, load_processor
from spatial.reward.toy import ToyVLMConfig, build_toy_backbone
from spatial.world import render, sample_pair

TINY = ToyVLMConfig(image_size=32, vision_hidden=32, vision_depth=1, vision_heads=2, hidden=32, layers=1, heads=2,
                    kv_heads=2, intermediate=64, mrope_section=(2, 3, 3))  # fmt: skip


def tiny_backbone(folder, seed=0):
    model, processor = build_toy_backbone(TINY, seed=seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone(tmp_path_factory.mktemp("vlm"))


@pytest.fixture(scope="module")
def model(backbone):
    torch.manual_seed(0)
    m = SpatialScore.from_backbone(SpatialScoreConfig(backbone=str(backbone), lora_rank=4), device="cpu")
    with torch.no_grad():  # a head with real spread, so equalities below are not trivially 0 == 0
        m.head.net[2].weight.normal_(std=1.0)
        for name, p in m.vlm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return m.eval()


@pytest.fixture(scope="module")
def batch():
    pairs = [sample_pair(s) for s in range(6)]
    return [p.prompt for p in pairs], [render(p.example.scene, 32) for p in pairs]


def test_scores_do_not_depend_on_padding_side_or_batch_order(model, batch):
    prompts, images = batch
    base = model.score(prompts, images).mu
    assert np.ptp(base) > 1e-3  # different inputs really score differently
    with torch.no_grad():
        left, _ = model(**model.encode(prompts, images, padding_side="left"))
    np.testing.assert_allclose(left.numpy(), base, rtol=1e-5, atol=1e-5)
    perm = [3, 0, 5, 1, 4, 2]
    shuffled = model.score([prompts[i] for i in perm], [images[i] for i in perm]).mu
    np.testing.assert_allclose(shuffled, base[perm], rtol=1e-5, atol=1e-5)
    one_by_one = [model.score([p], [im]).mu[0] for p, im in zip(prompts, images)]
    np.testing.assert_allclose(one_by_one, base, rtol=1e-5, atol=1e-5)


def test_image_tokens_get_two_dimensional_m_rope_positions(model, batch, monkeypatch):
    seen = []
    real = modeling_qwen2_5_vl.Qwen2_5_VLModel.get_rope_index

    def spy(self, input_ids, mm_token_type_ids, *args, **kwargs):  # records, then runs the real one
        out = real(self, input_ids, mm_token_type_ids, *args, **kwargs)
        seen.append((input_ids, out[0]))
        return out

    monkeypatch.setattr(modeling_qwen2_5_vl.Qwen2_5_VLModel, "get_rope_index", spy)
    model.score(*batch)
    assert seen, "the backbone never computed M-RoPE positions (mm_token_type_ids not passed?)"
    ids, pos = seen[0]
    image = ids[0] == model.vlm.get_base_model().config.image_token_id
    h, w = pos[1, 0, image], pos[2, 0, image]
    grid = TINY.image_size // (TINY.patch_size * TINY.merge_size)
    assert len(set(h.tolist())) == grid and len(set(w.tolist())) == grid  # rows and columns, not one line
    assert not torch.equal(h, w)


def test_lora_sits_on_the_language_model_only_unless_the_vision_tower_is_asked_for(backbone):
    plain = SpatialScore.from_backbone(SpatialScoreConfig(backbone=str(backbone), lora_rank=2))
    names = [n for n, p in plain.named_parameters() if p.requires_grad]
    assert any("language_model" in n and "lora_A" in n for n in names)
    assert not any("visual" in n for n in names)
    assert {"reward_embedding", "head.net.0.weight"} <= set(names)
    vision = SpatialScore.from_backbone(SpatialScoreConfig(backbone=str(backbone), lora_rank=2, lora_vision=True))
    assert any("visual" in n and "lora_A" in n for n, p in vision.named_parameters() if p.requires_grad)


def test_save_and_load_round_trip_one_folder(model, batch, tmp_path):
    folder = model.save_pretrained(tmp_path / "ckpt")
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "head.safetensors",
                 "spatialscore_config.json", "tokenizer.json", "chat_template.jinja"):  # fmt: skip
        assert (folder / name).is_file(), name
    loaded = SpatialScore.from_pretrained(folder)
    np.testing.assert_allclose(loaded.score(*batch).mu, model.score(*batch).mu, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.score(*batch).sigma, model.score(*batch).sigma, rtol=1e-6)
    assert REWARD_TOKEN in loaded.processor.tokenizer.get_vocab()


def test_a_checkpoint_moves_with_its_backbone(model, batch, tmp_path):
    import shutil

    backbone = tmp_path / "assets" / "vlm"
    shutil.copytree(model.config.backbone, backbone)
    model.config.backbone = str(backbone)
    model.save_pretrained(tmp_path / "assets" / "spatialscore")
    shutil.move(tmp_path / "assets", tmp_path / "moved")
    loaded = SpatialScore.from_pretrained(tmp_path / "moved" / "spatialscore")
    np.testing.assert_allclose(loaded.score(*batch).mu, model.score(*batch).mu, rtol=1e-6, atol=1e-6)


def test_a_checkpoint_copied_without_its_backbone_names_the_folder_it_needs(model, backbone, tmp_path):
    import shutil

    shutil.copytree(backbone, tmp_path / "assets" / "vlm")
    model.config.backbone = str(tmp_path / "assets" / "vlm")
    model.save_pretrained(tmp_path / "assets" / "spatialscore")
    shutil.copytree(tmp_path / "assets" / "spatialscore", tmp_path / "alone")  # the backbone stays behind
    with pytest.raises(FileNotFoundError, match=r"needs its backbone '../vlm', which is not at .*/vlm"):
        SpatialScore.from_pretrained(tmp_path / "alone")


def test_prob_prefer_compares_the_two_gaussians(model, batch):
    prompts, images = batch
    ab, ba = model.prob_prefer(prompts[0], images[0], images[1]), model.prob_prefer(prompts[0], images[1], images[0])
    # The two calls batch the images in opposite orders; float32 rounding differs by ~1e-6.
    assert 0.0 <= ab <= 1.0 and ab + ba == pytest.approx(1.0, abs=1e-5)


def test_bad_inputs_get_one_clear_error(model, batch, tmp_path):
    prompts, images = batch
    with pytest.raises(ScoringInputError, match="prompt 1 is empty"):
        model.score([prompts[0], " "], images[:2])
    with pytest.raises(ScoringInputError, match="2 prompts but 1 images"):
        model.score(prompts[:2], images[:1])
    with pytest.raises(ScoringInputError, match="prompt 0 contains the reserved token '<\\|reward\\|>'"):
        model.score([prompts[0] + " <|reward|>", prompts[1]], images[:2])
    with pytest.raises(ScoringInputError, match="prompt 1 contains the reserved token '<\\|image_pad\\|>'"):
        model.score([prompts[0], "<|image_pad|> " + prompts[1]], images[:2])
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ImageLoadError, match="image 1 does not decode"):
        model.score(prompts[:2], [images[0], str(tmp_path / "bad.png")])
    with pytest.raises(FileNotFoundError, match="not a SpatialScore checkpoint"):
        SpatialScore.from_pretrained(tmp_path)


def test_the_processor_needs_no_video_processor_or_torchvision(backbone):
    processor = load_processor(str(backbone))
    assert isinstance(processor, ImageProcessor) and not hasattr(processor, "video_processor")
    out = processor(text=["<|vision_start|><|image_pad|><|vision_end|> a red circle"], images=[Image.new("RGB", (50, 40))],
                    return_tensors="pt")  # fmt: skip
    assert {"pixel_values", "image_grid_thw", "mm_token_type_ids"} <= set(out)
    assert "torchvision" not in sys.modules


def test_a_backbone_without_the_reward_token_gets_one_row_more_and_the_trained_vector_in_it(tmp_path, monkeypatch, batch):
    # A real Qwen2.5-VL tokenizer has no <|reward|>; build a toy one without it, vocabulary == embedding rows.
    from spatial.reward import toy

    monkeypatch.setattr(toy, "SPECIAL", [t for t in toy.SPECIAL if t != REWARD_TOKEN])
    folder = tiny_backbone(tmp_path / "vlm")
    monkeypatch.undo()
    tokenizer = load_processor(str(folder)).tokenizer
    rows = len(tokenizer)
    assert REWARD_TOKEN not in tokenizer.get_vocab()

    torch.manual_seed(0)
    m = SpatialScore.from_backbone(SpatialScoreConfig(backbone=str(folder), lora_rank=4), device="cpu").eval()
    emb = m.vlm.get_base_model().get_input_embeddings()
    assert m.reward_token_id == rows and emb.num_embeddings == rows + 1

    seen = []
    handle = emb.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
    with torch.no_grad():
        m.reward_embedding.normal_()
        before = m.score(*batch).mu
        ids, out = seen[-1]
        handle.remove()
        # The hook wrote the trained vector at every reward token, one per row.
        at_token = out[ids == m.reward_token_id]
        assert at_token.shape[0] == len(batch[0])
        torch.testing.assert_close(at_token, m.reward_embedding.expand_as(at_token))
        emb.weight[m.reward_token_id].normal_(std=10.0)  # the resized row itself is never read
        np.testing.assert_array_equal(m.score(*batch).mu, before)
        m.reward_embedding.normal_()
        assert np.abs(m.score(*batch).mu - before).max() > 1e-4

    loaded = SpatialScore.from_pretrained(m.save_pretrained(tmp_path / "ckpt"))
    assert loaded.vlm.get_base_model().get_input_embeddings().num_embeddings == rows + 1
    np.testing.assert_allclose(loaded.score(*batch).mu, m.score(*batch).mu, rtol=1e-6, atol=1e-6)
