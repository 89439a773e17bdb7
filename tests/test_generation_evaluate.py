"""`python -m training.evaluate generator`: K seeds per prompt, the oracle's verdicts, one JSON line."""

import json

import pytest
from PIL import Image

from spatial.generation import build_toy_pipeline
from spatial.generation.evaluate import judge, main
from spatial.generation.toy import TINY
from spatial.world import Scene, SceneObject, render, sample_example, sample_pair
from training.evaluate import main as dispatch


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_flux")
    build_toy_pipeline(TINY, seed=3).save_pretrained(path)
    return path


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle to the left of a blue square\n\na green triangle above a purple diamond\n")
    return path


def test_renders_of_the_true_scene_score_one_on_both_accuracies():
    examples = [sample_example(100 + i) for i in range(12)]
    summary = judge([render(e.scene, 32) for e in examples], [e.prompt for e in examples])["summary"]
    assert summary["object_accuracy"] == 1.0 and summary["spatial_accuracy"] == 1.0 and summary["n"] == 12


def test_right_objects_in_the_wrong_places_count_for_objects_but_not_layout():
    pairs = [sample_pair(200 + i) for i in range(12)]
    images = [render(p.perturbation.scene, 32) for p in pairs]
    summary = judge(images, [p.prompt for p in pairs])["summary"]
    assert summary["object_accuracy"] == 1.0 and summary["spatial_accuracy"] == 0.0


def test_unrequested_objects_are_counted_apart_from_the_accuracies():
    named = (SceneObject("red", "circle", 0.25, 0.5, 0.2), SceneObject("blue", "square", 0.75, 0.5, 0.2))
    extra = SceneObject("yellow", "diamond", 0.5, 0.15, 0.2)
    images = [render(Scene(named, (240, 240, 240)), 32), render(Scene(named + (extra,), (240, 240, 240)), 32)]
    result = judge(images, ["a red circle left of a blue square"] * 2)
    assert result["summary"]["object_accuracy"] == 1.0 and result["summary"]["spatial_accuracy"] == 1.0
    assert result["summary"]["extra_objects"] == 0.5 and result["summary"]["images_with_extras"] == 0.5
    assert [[e["name"] for e in r["extras"]] for r in result["rows"]] == [[], ["yellow diamond"]]


def test_blank_images_score_zero():
    examples = [sample_example(300 + i) for i in range(4)]
    blank = [Image.new("RGB", (32, 32), (240, 240, 240)) for _ in examples]
    summary = judge(blank, [e.prompt for e in examples])["summary"]
    assert summary["object_accuracy"] == 0.0 and summary["spatial_accuracy"] == 0.0


def test_prints_one_json_line_with_the_accuracies_last(tiny_dir, prompt_file, tmp_path, capsys):
    out = tmp_path / "eval"
    code = dispatch(["generator", "--preset", "toy", "--base_model", str(tiny_dir), "--prompts", str(prompt_file),
                     "--seeds", "3", "--steps", "2", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 6 and result["prompts"] == 2 and result["seeds"] == 3
    assert 0 <= result["spatial_accuracy"] <= result["object_accuracy"] <= 1
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and [r["seed"] for r in rows] == [0, 1, 2, 0, 1, 2]
    assert (out / rows[0]["file_name"]).is_file()
    # The JSON agrees with the per-image verdicts it summarises.
    assert result["object_accuracy"] == round(sum(r["objects_ok"] for r in rows) / 6, 4)


def test_lora_evaluates_the_adapter_on_top_of_the_base_model(tiny_dir, prompt_file, tmp_path, capsys):
    from diffusers import FluxPipeline

    from spatial.generation.lora import add_lora, save_lora

    pipe = FluxPipeline.from_pretrained(tiny_dir)
    add_lora(pipe.transformer, rank=4, alpha=8)
    for name, p in pipe.transformer.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # far from zero, so the adapter changes the images
    save_lora(pipe, tmp_path / "lora")
    args = ["generator", "--base_model", str(tiny_dir), "--prompts", str(prompt_file), "--seeds", "2",
            "--steps", "2", "--device", "cpu"]  # fmt: skip
    runs = {}
    for name, extra in (("base", []), ("lora", ["--lora", str(tmp_path / "lora")])):
        assert dispatch(args + extra + ["--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert runs["lora"]["lora"] == str(tmp_path / "lora") and runs["base"]["lora"] is None
    first = [Image.open(tmp_path / name / "images" / "0000_s0.png").tobytes() for name in runs]
    assert first[0] != first[1]


def test_a_prompt_the_oracle_cannot_read_is_refused_before_any_rendering(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("a red circle left of a blue square\na photo of a cat on a sofa\n")
    code = main(["--base_model", str(tiny_dir), "--prompts", str(bad), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "prompt 2" in err[0] and "cat" in err[0]


def test_a_missing_prompt_file_is_one_line(tiny_dir, tmp_path, capsys):
    assert main(["--base_model", str(tiny_dir), "--prompts", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err


def test_a_missing_model_exits_1_with_one_line(tmp_path, prompt_file, capsys):
    code = main(["--base_model", str(tmp_path / "no-model"), "--prompts", str(prompt_file), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "no-model" in err[0]


def test_an_unknown_preset_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--preset", "sdxl"])
    assert e.value.code == 2 and "flux-dev" in capsys.readouterr().err
