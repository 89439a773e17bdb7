"""The generation service: one FluxPipeline, base and tuned renders, clear errors, the flux-dev loader."""

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline

from spatial.generation import (
    AdapterUnavailableError, GenerationConfig, GenerationService, ModelUnavailableError, add_lora, build_toy_pipeline,
    load_pipeline, sampling, save_lora,
)  # fmt: skip
from spatial.generation import service as service_module
from spatial.generation.toy import TINY

PROMPTS = ["a red circle to the left of a blue square", "a green triangle above a purple diamond"]


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def same(a, b) -> bool:
    return np.array_equal(pixels(a), pixels(b))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_flux")
    build_toy_pipeline(TINY, seed=1).save_pretrained(path)
    return path


def tiny_config(path, **kw) -> GenerationConfig:
    config = GenerationConfig.for_preset("toy", base_model=str(path), device="cpu", steps=4, size=32, **kw)
    config.lora = None  # no RL adapter unless a test loads one
    return config


def nudge_lora(transformer, name: str, seed: int = 0) -> None:
    """Give an adapter non-zero B matrices, as training would (a fresh LoRA is a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in transformer.named_parameters():
            if "lora_B" in n and f".{name}." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def saved_lora(tiny_dir, path, alpha: float = 4, seed: int = 0):
    """A rank-4 LoRA on the tiny transformer, nudged off zero, saved in the diffusers format at `path`."""
    source = FluxPipeline.from_pretrained(tiny_dir)
    add_lora(source.transformer, rank=4, alpha=alpha)
    nudge_lora(source.transformer, "default", seed=seed)
    save_lora(source, path)
    return path


@pytest.fixture
def service(tiny_dir):
    return GenerationService(tiny_config(tiny_dir))


def test_generate_renders_exactly_what_flux_pipeline_call_renders(service):
    pipe = service.pipeline
    ours = service.generate(PROMPTS, [3], steps=4, guidance=3.5, size=32)
    theirs = pipe(PROMPTS, generator=[torch.Generator().manual_seed(3) for _ in PROMPTS], num_inference_steps=4,
                  guidance_scale=3.5, height=32, width=32,
                  max_sequence_length=pipe.tokenizer_2.model_max_length).images  # fmt: skip
    assert all(same(a, b) for a, b in zip(ours, theirs))


def test_same_request_gives_the_same_images_and_seeds_change_them(service):
    a = service.generate(PROMPTS[0], [0, 1])
    b = service.generate(PROMPTS[0], [0, 1])
    assert same(a[0], b[0]) and same(a[1], b[1])
    assert not same(a[0], a[1])


def test_an_image_does_not_depend_on_the_rest_of_its_batch(tiny_dir):
    batched = GenerationService(tiny_config(tiny_dir, batch_size=8)).generate(PROMPTS, [0, 5])
    one_by_one = GenerationService(tiny_config(tiny_dir, batch_size=1)).generate(PROMPTS, [0, 5])
    # prompt-major order: (p0, s0), (p0, s5), (p1, s0), (p1, s5)
    single = GenerationService(tiny_config(tiny_dir)).generate(PROMPTS[1], [5])[0]
    # Float sums may round differently with the batch shape; one 8-bit level is the most it may move.
    assert all(np.abs(pixels(a) - pixels(b)).max() <= 1 for a, b in zip(batched, one_by_one))
    assert np.abs(pixels(batched[3]) - pixels(single)).max() <= 1


def test_step_functions_compose_into_generate(service):
    pipe = service.pipeline
    cond = sampling.encode_prompts(pipe, PROMPTS)
    x = sampling.initial_latents(pipe, [7, 8], 32)
    sigmas = sampling.sigma_schedule(pipe, 4, 32)
    assert sigmas.shape == (5,) and sigmas[0] == 1 and sigmas[-1] == 0 and torch.all(sigmas[:-1] > sigmas[1:])
    with torch.no_grad():
        for i in range(4):
            v = sampling.velocity(pipe, x, sigmas[i], cond, sampling.guidance_vector(pipe, 3.5, 2))
            x = sampling.euler_step(x, v, sigmas[i], sigmas[i + 1])
    by_hand = sampling.decode(pipe, x, 32)
    via_service = service.generate(PROMPTS[1], [8], steps=4, guidance=3.5, size=32)[0]
    assert same(by_hand[1], via_service)


def test_initial_noise_is_per_seed_whatever_the_batch(service):
    pipe = service.pipeline
    both = sampling.initial_latents(pipe, [4, 9], 32)
    alone = sampling.initial_latents(pipe, [9], 32)
    assert torch.equal(both[1], alone[0])


def test_compare_renders_base_and_tuned_from_one_transformer(tiny_dir, tmp_path):
    saved_lora(tiny_dir, tmp_path / "lora", alpha=8)

    service = GenerationService(tiny_config(tiny_dir))
    base_params = sum(p.numel() for p in service.pipeline.transformer.parameters())
    transformer = service.pipeline.transformer
    service.load_adapter(tmp_path / "lora", "tuned")
    base, tuned = service.compare(PROMPTS[0], seed=2)

    assert service.pipeline.transformer is transformer  # never a second copy
    lora_params = sum(p.numel() for n, p in transformer.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in transformer.parameters()) == base_params + lora_params
    assert same(base, service.generate(PROMPTS[0], [2])[0])  # the adapter is off for the base side
    assert same(tuned, service.generate(PROMPTS[0], [2], adapter="tuned")[0])
    assert not same(base, tuned)
    plain = GenerationService(tiny_config(tiny_dir)).generate(PROMPTS[0], [2])[0]
    assert same(base, plain)  # and the base side is the model without any adapter


def test_set_adapter_picks_which_loaded_run_is_the_tuned_side(tiny_dir, tmp_path):
    for k in (1, 2):
        saved_lora(tiny_dir, tmp_path / f"run{k}", seed=k)
    service = GenerationService(tiny_config(tiny_dir))
    service.load_adapter(tmp_path / "run1", "run1")
    service.load_adapter(tmp_path / "run2", "run2")
    service.set_adapter("run2")
    _, tuned = service.compare(PROMPTS[1], seed=0)
    assert same(tuned, service.generate(PROMPTS[1], [0], adapter="run2")[0])
    assert not same(tuned, service.generate(PROMPTS[1], [0], adapter="run1")[0])
    with pytest.raises(AdapterUnavailableError, match="run3"):
        service.set_adapter("run3")


def test_an_unloaded_adapter_leaves_the_transformer_and_its_memory(tiny_dir, tmp_path):
    saved_lora(tiny_dir, tmp_path / "lora")
    service = GenerationService(tiny_config(tiny_dir))
    plain = service.generate(PROMPTS[0], [1])[0]
    count = sum(p.numel() for p in service.pipeline.transformer.parameters())
    service.load_adapter(tmp_path / "lora", "compare")
    service.unload_adapter("compare")
    assert "compare" not in service.adapters
    assert "compare" not in (getattr(service.pipeline.transformer, "peft_config", None) or {})
    assert sum(p.numel() for p in service.pipeline.transformer.parameters()) == count
    assert same(service.generate(PROMPTS[0], [1])[0], plain)
    service.unload_adapter("never-loaded")  # nothing to do, no error


def test_an_error_in_the_middle_of_a_render_leaves_the_adapter_off(tiny_dir, tmp_path, monkeypatch):
    saved_lora(tiny_dir, tmp_path / "lora")
    service = GenerationService(tiny_config(tiny_dir))
    service.load_adapter(tmp_path / "lora", "tuned")
    plain = service.generate(PROMPTS[0], [1])[0]
    real = sampling.generate_images

    def out_of_memory(*args, **kwargs):  # what a too-big request does on a GPU, after the adapter went on
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(sampling, "generate_images", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        service.generate(PROMPTS[0], [1], adapter="tuned")
    monkeypatch.setattr(sampling, "generate_images", real)
    # Someone using the pipeline directly next gets the base model, not a half-switched one.
    direct = sampling.generate_images(service.pipeline, [PROMPTS[0]], [1], 4, 3.5, 32)[0]
    assert same(direct, plain)


def test_tuned_without_an_adapter_says_how_to_supply_one(service):
    assert "SPATIAL_LORA" in service.tuned_status()
    with pytest.raises(AdapterUnavailableError, match="SPATIAL_LORA"):
        service.compare(PROMPTS[0], seed=0)
    assert len(service.generate(PROMPTS[0], [0])) == 1  # the base model still works


def test_a_configured_lora_that_is_missing_leaves_base_working(tiny_dir, tmp_path):
    config = tiny_config(tiny_dir)
    config.lora = str(tmp_path / "no-such-lora")
    service = GenerationService(config)
    assert "no-such-lora" in service.tuned_status()
    assert len(service.generate(PROMPTS[0], [0])) == 1


def test_progress_callback_counts_every_denoising_step(service):
    seen = []
    service.generate(PROMPTS, [0, 1, 2], steps=3, callback=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (18, 18) and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))


def test_bad_requests_are_refused_with_a_clear_message(service):
    with pytest.raises(ValueError, match="prompt"):
        service.generate([], [0])
    with pytest.raises(ValueError, match="multiple of 16"):
        service.generate(PROMPTS[0], [0], size=30)
    for zero in ({"steps": 0}, {"size": 0}):  # 0 is a value (refused), not "the default"
        with pytest.raises(ValueError, match="got 0"):
            service.generate(PROMPTS[0], [0], **zero)


def test_an_adapter_named_like_a_module_method_is_refused_with_a_reason(tiny_dir, tmp_path):
    service = GenerationService(tiny_config(tiny_dir))
    with pytest.raises(ValueError, match="clashes"):
        service.load_adapter(tmp_path / "lora", "eval")


def test_a_missing_local_model_names_the_folder_and_the_setting(tmp_path):
    with pytest.raises(ModelUnavailableError) as e:
        load_pipeline(GenerationConfig.for_preset("toy", base_model=str(tmp_path / "nowhere"), device="cpu"))
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "SPATIAL_BASE_MODEL" in msg and "pretrain_toy" in msg
    assert "\n" not in msg and "Traceback" not in msg


def test_an_unreachable_hub_model_names_the_repo_and_how_to_get_access(tmp_path):
    # No network here (HF_HUB_OFFLINE=1) and an empty cache: what a Space without HF_TOKEN access sees.
    config = GenerationConfig.for_preset("flux-dev", device="cpu", cache_dir=str(tmp_path / "empty-cache"))
    with pytest.raises(ModelUnavailableError) as e:
        load_pipeline(config)
    msg = str(e.value)
    assert "black-forest-labs/FLUX.1-dev" in msg and "HF_TOKEN" in msg and "SPATIAL_BASE_MODEL" in msg
    assert "\n" not in msg


def test_flux_dev_preset_loads_a_pipeline_in_the_hub_layout(tiny_dir, tmp_path):
    # The Hub's servers cannot exist here, so its cache stands in: the repo id resolves offline to a
    # snapshot folder, and FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev") runs as on a Space.
    repo = tmp_path / "hub" / "models--black-forest-labs--FLUX.1-dev"
    commit = "0" * 40
    build_toy_pipeline(TINY, seed=1).save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    config = GenerationConfig.for_preset("flux-dev", device="cpu", cache_dir=str(tmp_path / "hub"), steps=2, size=32)
    assert config.base_model == "black-forest-labs/FLUX.1-dev"
    pipe = load_pipeline(config)
    assert pipe.transformer.dtype == torch.bfloat16 and not pipe.transformer.training
    images = GenerationService(config, pipeline=pipe).generate(PROMPTS[0], [0])
    assert images[0].size == (32, 32)


def test_spaces_gpu_leaves_the_entry_point_a_plain_function_off_zerogpu():
    assert service_module._render_on_gpu.__name__ == "_render_on_gpu"
    assert not hasattr(service_module._render_on_gpu, "zerogpu")


def test_the_zerogpu_reservation_grows_with_the_work_and_is_capped():
    one = service_module._gpu_seconds(0, [("p", 0, None)], 28, 3.5, 1024)
    pair = service_module._gpu_seconds(0, [("p", 0, None), ("p", 0, "tuned")], 28, 3.5, 1024)
    assert 20 < one < pair <= 600
    assert service_module._gpu_seconds(0, [("p", 0, None)] * 64, 50, 3.5, 2048) == 600


def test_a_compiled_transformer_renders_the_same_pixels_for_base_and_tuned(tiny_dir, tmp_path):
    saved_lora(tiny_dir, tmp_path / "lora", alpha=8)
    eager = GenerationService(tiny_config(tiny_dir))
    compiled = GenerationService(tiny_config(tiny_dir, compile=True))
    before = compiled.generate(PROMPTS[0], [5])[0]  # compiled before any adapter exists
    for svc in (eager, compiled):
        svc.load_adapter(tmp_path / "lora", "tuned")

    assert same(before, eager.generate(PROMPTS[0], [5])[0])
    for a, b in zip(eager.compare(PROMPTS[0], seed=5), compiled.compare(PROMPTS[0], seed=5)):
        assert same(a, b)  # the adapter switch reaches the compiled graph both ways
    assert not same(*compiled.compare(PROMPTS[0], seed=5))
