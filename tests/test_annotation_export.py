"""Export: a folder `datasets.load_dataset` reads (pairs and raw labels, with image columns), pairs
resolved by majority in the reward-training layout."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from spatial.annotation import (
    AnnotationConfig, AnnotationError, AnnotationStore, ExportConfig, PairInput, export, import_pair_folder,
    import_world,
)  # fmt: skip


def press(store, who, verdict):
    """`who` takes the next pair and answers `verdict` in image terms (a, b, tie, both_wrong, skip)."""
    a = store.next_pair(who)
    label = ("left" if a.left_image == verdict else "right") if verdict in ("a", "b") else verdict
    store.submit(who, a.pair_id, label, note=f"{who} says {verdict}")
    return a


def test_pairs_are_resolved_by_a_strict_majority(tmp_path):
    store = AnnotationStore(tmp_path / "s", AnnotationConfig(overlap=3))
    for i in range(4):  # distinct images; added one by one so we know which pair is which
        a, b = Image.new("RGB", (8, 8), (i, 0, 0)), Image.new("RGB", (8, 8), (i, 0, 99))
        store.add_pairs([PairInput(f"prompt {i}", a, b)])
    order = [p.id for p in store.pairs()]
    plan = {  # pair -> verdicts of ann0, ann1, ann2 (+ a skip by ann3 on pair 0)
        order[0]: ["b", "b", "a"],
        order[1]: ["tie", "tie", "a"],
        order[2]: ["both_wrong", "b", "both_wrong"],
        order[3]: ["a", "b", "skip"],
    }
    for k in range(3):
        for pid, verdicts in plan.items():
            a = store.next_pair(f"ann{k}")
            # pairs come in queue order, not ours: answer for the pair actually shown
            v = plan[a.pair_id][k]
            label = ("left" if a.left_image == v else "right") if v in ("a", "b") else v
            store.submit(f"ann{k}", a.pair_id, label)
    extra = store.next_pair("ann3")  # only pair 3 has a free slot (its skip)
    assert extra.pair_id == order[3]
    store.submit("ann3", extra.pair_id, "skip")

    summary = export(store, tmp_path / "out", ExportConfig(test_fraction=0.0))
    rows = [json.loads(line) for line in open(tmp_path / "out" / "pairs" / "train" / "metadata.jsonl")]
    assert summary.pairs == {"train": 1} and summary.dropped == 3 and summary.labels == 13
    [row] = rows
    p0 = store.pair(order[0])
    assert row["pair_id"] == p0.id and row["prompt"] == "prompt 0"
    assert row["chosen_file_name"] == f"images/{p0.image_b}.png"  # b won 2 to 1
    assert row["rejected_file_name"] == f"images/{p0.image_a}.png"
    assert (row["votes_chosen"], row["votes_rejected"], row["votes_tie"], row["votes_both_wrong"]) == (2, 1, 0, 0)
    assert (tmp_path / "out" / "pairs" / "train" / row["chosen_file_name"]).read_bytes() == \
        store.image_path(p0.image_b).read_bytes()  # fmt: skip
    assert ExportConfig(min_votes=4).min_votes == 4
    assert export(store, tmp_path / "strict", ExportConfig(min_votes=4, test_fraction=0.0)).pairs == {}


@pytest.fixture
def labelled(tmp_path):
    store = AnnotationStore(tmp_path / "s", AnnotationConfig(overlap=2))
    import_world(store, 30, seed=4)
    for _ in range(30):
        press(store, "ann", "a")
        press(store, "bob", "a" if _ % 5 else "tie")
    return store


def test_the_export_round_trips_through_load_dataset_with_image_columns(tmp_path, labelled):
    out = tmp_path / "out"
    summary = export(labelled, out)
    cache = tmp_path / "hf-cache"
    pairs = datasets.load_dataset(str(out), "pairs", cache_dir=str(cache))
    assert isinstance(pairs["train"].features["chosen"], datasets.Image)
    assert isinstance(pairs["train"].features["rejected"], datasets.Image)
    assert {s: len(d) for s, d in pairs.items()} == summary.pairs
    assert sum(summary.pairs.values()) == 24  # 6 pairs had a 1-1 split (a vs tie): no majority
    by_id = {p.id: p for p in labelled.pairs()}
    row = pairs["train"][0]
    expected = labelled.load_image(by_id[row["pair_id"]].image_a)  # everyone preferred image a
    assert np.array_equal(np.asarray(row["chosen"].convert("RGB")), np.asarray(expected))
    assert row["votes_chosen"] == 2 and row["known"] == "chosen"

    labels = datasets.load_dataset(str(out), "labels", cache_dir=str(cache))["train"]
    assert len(labels) == labelled.label_count() == 60
    assert isinstance(labels.features["left"], datasets.Image)
    stored = {r.submission_id: r for r in labelled.labels()}
    for rec in labels.select(range(5)):
        r = stored[rec["submission_id"]]
        assert (rec["annotator"], rec["label"], rec["left_image"]) == (r.annotator, r.label, r.left_image)
        assert rec["note"] == r.note
        assert np.array_equal(np.asarray(rec["left"].convert("RGB")), np.asarray(labelled.load_image(r.left)))
    # The default config is the pairs subset.
    assert set(datasets.load_dataset(str(out), cache_dir=str(cache))) == set(summary.pairs)


def test_the_pairs_subset_is_the_spatialworld_pair_layout(tmp_path, labelled):
    out = tmp_path / "out"
    summary = export(labelled, out)
    for split in summary.pairs:
        first = json.loads((out / "pairs" / split / "metadata.jsonl").read_text().splitlines()[0])
        assert {"prompt", "chosen_file_name", "rejected_file_name"} <= set(first)
    # Read back as a pair source (what reward training reads): same images, chosen is known.
    again = AnnotationStore(tmp_path / "again")
    assert import_pair_folder(again, out / "pairs").added == sum(summary.pairs.values())
    ids = {(p.image_a, p.image_b) for p in labelled.pairs()}
    assert all((p.image_a, p.image_b) in ids for p in again.pairs())


def test_pairs_imported_from_a_held_out_split_stay_in_the_test_split(tmp_path):
    from spatial.world import write_pairs

    write_pairs(tmp_path / "source", 12, seed=7, size=32, test_fraction=0.25)
    store = AnnotationStore(tmp_path / "s", AnnotationConfig(overlap=1))
    import_pair_folder(store, tmp_path / "source", gold_fraction=0.0)
    source_test = {p.id for p in store.pairs() if p.meta["split"] == "test"}
    assert source_test
    for _ in range(12):
        press(store, "ann", "a")
    summary = export(store, tmp_path / "out", ExportConfig(test_fraction=0.0))  # no random held-out pairs
    test_rows = [json.loads(x) for x in open(tmp_path / "out" / "pairs" / "test" / "metadata.jsonl")]
    assert {r["pair_id"] for r in test_rows} == source_test and summary.pairs["train"] == 12 - len(source_test)


def test_a_new_export_replaces_the_old_one_and_other_folders_are_refused(tmp_path, labelled):
    out = tmp_path / "out"
    export(labelled, out)
    import_world(labelled, 1, seed=99)  # one more pair, labelled after the first export
    press(labelled, "cat", "b")
    assert export(labelled, out).labels == 61
    assert len((out / "labels" / "export" / "metadata.jsonl").read_text().splitlines()) == 61
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(AnnotationError, match="not an annotation export"):
        export(labelled, precious)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_the_command_line_imports_exports_and_reports(tmp_path, capsys):
    from spatial.annotation.__main__ import main

    store_dir = tmp_path / "store"
    assert main(["import", "--store", str(store_dir), "world:4:1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["added"], out["existing"]) == (4, 0)
    store = AnnotationStore(store_dir)
    for who in ("ann", "bob"):
        for _ in range(4):
            press(store, who, "a")
    assert main(["export", "--store", str(store_dir), "--out", str(tmp_path / "out"), "--test-fraction", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == {"train": 4}
    assert main(["stats", "--store", str(store_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["percent_agreement"] == 1.0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "annotation.sqlite3").write_bytes(b"not a database at all" * 100)
    bad = [(["export", "--store", str(store_dir), "--out", str(tmp_path / "mine")], "not an annotation export"),
           (["stats", "--store", str(tmp_path / "nowhere")], "no annotation store"),
           (["import", "--store", str(store_dir), "world:zero"], "world:N"),
           (["import", "--store", str(tmp_path / "a-file"), "world:2"], "FileExistsError"),
           (["export", "--store", str(store_dir), "--out", str(tmp_path / "a-file" / "sub")], "Error"),
           (["stats", "--store", str(tmp_path / "garbage")], "DatabaseError")]  # fmt: skip
    for argv, message in bad:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_reward_training_starts_from_the_exported_pairs(tmp_path, labelled):
    from spatial.reward.toy import ToyVLMConfig, build_toy_backbone
    from training import train_reward

    model, processor = build_toy_backbone(ToyVLMConfig(image_size=32, vision_hidden=32, vision_depth=1, vision_heads=2,
                                                       hidden=32, layers=1, heads=2, kv_heads=2, intermediate=64,
                                                       mrope_section=(2, 3, 3)))  # fmt: skip
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    summary = export(labelled, tmp_path / "out")
    argv = ["--pairs", str(tmp_path / "out" / "pairs"), "--backbone", str(tmp_path / "vlm"), "--output_dir",
            str(tmp_path / "run"), "--steps", "2", "--batch_size", "4", "--lora_rank", "2", "--mc_samples", "16",
            "--checkpoint_every", "2", "--eval_every", "2", "--threads", "1"]  # fmt: skip
    assert train_reward.main(argv) == 0
    trained = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert trained["train_pairs"] == summary.pairs["train"]


def test_a_label_on_a_pair_whose_image_file_is_gone_is_exported_without_that_image(tmp_path, labelled):
    before = export(labelled, tmp_path / "before")
    lost = next(p for p in labelled.pairs() if labelled.pair(p.id).n_votes == 2 and p.id in _pair_ids(tmp_path / "before"))
    labelled.image_path(lost.image_a).unlink()
    summary = export(labelled, tmp_path / "out")  # one lost file does not stop the export
    cache = tmp_path / "hf-cache"
    labels = datasets.load_dataset(str(tmp_path / "out"), "labels", cache_dir=str(cache))["train"]
    assert len(labels) == 60
    on_lost = [r for r in labels if r["pair_id"] == lost.id]
    assert on_lost and all((r["left"] is None) == (r["left_image"] == "a") for r in on_lost)
    pairs = datasets.load_dataset(str(tmp_path / "out"), "pairs", cache_dir=str(cache))
    assert lost.id not in {r["pair_id"] for split in pairs.values() for r in split}  # cannot train anything
    assert sum(summary.pairs.values()) == sum(before.pairs.values()) - 1


def _pair_ids(folder):
    return {json.loads(line)["pair_id"] for path in folder.glob("pairs/*/metadata.jsonl") for line in open(path)}
