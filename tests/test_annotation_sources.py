"""Pair sources: a SpatialWorld pair folder, a dataset through `datasets.load_dataset`, SpatialWorld
on the fly, the Generate tab; a bad source gets one clear message and changes nothing."""

import json
import shutil

import pytest

from spatial.annotation import AnnotationStore, SourceError, import_dataset, import_pair_folder, import_source
from spatial.world import write_pairs


@pytest.fixture(scope="module")
def world_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    write_pairs(out, 12, seed=5)
    return out


def copy_of(folder, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def image_files(store):
    return sorted((store.root / "images").glob("*/*.png"))


def test_a_spatialworld_folder_imports_with_the_chosen_image_as_known_answer(tmp_path, world_folder):
    store = AnnotationStore(tmp_path / "s")
    summary = import_pair_folder(store, world_folder)
    assert (summary.added, summary.existing) == (12, 0)
    pairs = store.pairs()
    assert {p.known for p in pairs} == {"a"} and {p.meta["split"] for p in pairs} == {"train", "test"}
    rows = [json.loads(line) for line in open(world_folder / "train" / "metadata.jsonl")]
    by_prompt = {p.prompt: p for p in pairs}
    first = by_prompt[rows[0]["prompt"]]
    # the stored image a is, pixel for pixel, the folder's chosen image
    chosen = (world_folder / "train" / rows[0]["chosen_file_name"]).read_bytes()
    assert store.image_path(first.image_a).read_bytes() == chosen
    assert first.meta["perturbation"] == rows[0]["perturbation"]
    assert import_pair_folder(store, world_folder).added == 0  # importing again adds nothing


def test_a_dataset_loaded_with_datasets_gives_the_same_pairs(tmp_path, world_folder):
    # The Hub cannot be reached here; load_dataset reads the same layout from a local folder.
    by_folder = AnnotationStore(tmp_path / "a")
    import_pair_folder(by_folder, world_folder)
    by_dataset = AnnotationStore(tmp_path / "b")
    summary = import_dataset(by_dataset, str(world_folder))
    assert summary.added == 12
    assert {p.id for p in by_dataset.pairs()} == {p.id for p in by_folder.pairs()}


def test_a_corrupt_image_is_named_and_nothing_is_imported(tmp_path, world_folder):
    folder = copy_of(world_folder, tmp_path)
    lines = (folder / "train" / "metadata.jsonl").read_text().splitlines()
    target = folder / "train" / json.loads(lines[-1])["rejected_file_name"]
    target.write_bytes(target.read_bytes()[:100])  # truncated PNG
    store = AnnotationStore(tmp_path / "s")
    where = f"train/metadata.jsonl line {len(lines)}"
    with pytest.raises(SourceError, match=f"{where}: rejected image is not a readable image"):
        import_pair_folder(store, folder)
    assert store.pairs() == [] and image_files(store) == []


def test_a_pair_of_identical_images_is_named_by_its_line_and_nothing_is_imported(tmp_path, world_folder):
    folder = copy_of(world_folder, tmp_path)
    meta = folder / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    rows[-1]["rejected_file_name"] = rows[-1]["chosen_file_name"]
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = AnnotationStore(tmp_path / "s")
    with pytest.raises(SourceError, match=f"train/metadata.jsonl line {len(rows)}: the chosen and rejected images are identical"):
        import_pair_folder(store, folder)
    assert store.pairs() == [] and image_files(store) == []


def test_a_folder_missing_a_column_is_refused(tmp_path, world_folder):
    folder = copy_of(world_folder, tmp_path)
    meta = folder / "train" / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    bad = json.loads(lines[4])
    del bad["rejected_file_name"]
    lines[4] = json.dumps(bad)
    meta.write_text("\n".join(lines) + "\n")
    store = AnnotationStore(tmp_path / "s")
    with pytest.raises(SourceError, match="line 5 lacks rejected_file_name"):
        import_pair_folder(store, folder)
    assert store.pairs() == [] and image_files(store) == []


def test_a_dataset_missing_columns_is_refused(tmp_path, world_folder):
    folder = copy_of(world_folder, tmp_path)
    for split in ("train", "test"):
        meta = folder / split / "metadata.jsonl"
        rows = [json.loads(line) for line in meta.read_text().splitlines()]
        meta.write_text("".join(json.dumps({"caption" if k == "prompt" else k: v for k, v in r.items()}) + "\n"
                                for r in rows))  # fmt: skip
    store = AnnotationStore(tmp_path / "s")
    with pytest.raises(SourceError, match="lacks prompt"):
        import_dataset(store, str(folder))
    assert store.pairs() == []


def test_a_file_name_outside_the_folder_is_refused(tmp_path, world_folder):
    folder = copy_of(world_folder, tmp_path)
    meta = folder / "train" / "metadata.jsonl"
    rows = meta.read_text().splitlines()
    first = json.loads(rows[0])
    first["chosen_file_name"] = "../../../etc/hostname"
    meta.write_text("\n".join([json.dumps(first)] + rows[1:]) + "\n")
    with pytest.raises(SourceError, match="outside the dataset folder"):
        import_pair_folder(AnnotationStore(tmp_path / "s"), folder)


def test_import_source_reads_what_an_admin_types(tmp_path, world_folder):
    store = AnnotationStore(tmp_path / "s")
    assert import_source(store, "world:4:9").added == 4
    assert import_source(store, str(world_folder)).added == 12
    for spec, match in [("", "give a pair folder"), ("world:x", "world:N"), ("no such thing", "neither a folder"),
                        (str(tmp_path), "holds no")]:  # fmt: skip
        with pytest.raises(SourceError, match=match):
            import_source(store, spec)
    assert len(store.pairs()) == 16


def test_a_held_out_split_folder_imported_on_its_own_stays_held_out_however_its_path_is_typed(tmp_path, world_folder,
                                                                                              monkeypatch):  # fmt: skip
    folder = copy_of(world_folder, tmp_path)
    for n, typed in enumerate((str(folder / "test"), "copy/test")):
        store = AnnotationStore(tmp_path / f"s{n}")
        monkeypatch.chdir(tmp_path)
        import_pair_folder(store, typed)
        assert {p.meta["split"] for p in store.pairs()} == {"test"}, typed
