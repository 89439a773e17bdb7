"""Pair sources for reward training: SpatialWorld folders and datasets-readable sources, bad rows named."""

import json

import datasets
import pytest
from PIL import Image

from spatial.reward.data import BadRowError, DatasetError, ImageLoadError, load_image, load_pairs
from spatial.world import write_pairs


def _png(img):
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    write_pairs(out, 10, seed=3)
    return out


def test_a_spatialworld_folder_gives_decodable_pairs_per_split(pairs_dir):
    train, test = load_pairs(str(pairs_dir), "train"), load_pairs(str(pairs_dir), "test")
    assert (len(train), len(test)) == (9, 1)
    assert len(load_pairs(str(pairs_dir), "all")) == 10
    prompt, chosen, rejected = train[0].decode()
    assert prompt and chosen.size == rejected.size == (64, 64)


def test_a_row_without_an_image_column_stops_the_load_and_names_the_line(tmp_path, pairs_dir):
    lines = (pairs_dir / "train" / "metadata.jsonl").read_text().splitlines()
    (tmp_path / "train").mkdir()
    rec = json.loads(lines[1])
    del rec["rejected_file_name"]
    (tmp_path / "train" / "metadata.jsonl").write_text("\n".join([lines[0], json.dumps(rec)]) + "\n")
    with pytest.raises(DatasetError, match=r"metadata.jsonl:2 lacks column\(s\) rejected_file_name"):
        load_pairs(str(tmp_path), "train")
    for bad, message in ((None, "got None"), (3, "got 3")):
        rec["rejected_file_name"] = bad
        (tmp_path / "train" / "metadata.jsonl").write_text("\n".join([lines[0], json.dumps(rec)]) + "\n")
        with pytest.raises(DatasetError, match=f"metadata.jsonl:2: rejected_file_name must be an image file name, {message}"):
            load_pairs(str(tmp_path), "train")
    (tmp_path / "train" / "metadata.jsonl").write_text(lines[0] + "\n[1, 2]\n")
    with pytest.raises(DatasetError, match="metadata.jsonl:2 is not a JSON object"):
        load_pairs(str(tmp_path), "train")


def test_an_undecodable_image_and_an_empty_prompt_are_reported_by_row(tmp_path, pairs_dir):
    import shutil

    shutil.copytree(pairs_dir, tmp_path / "p")
    meta = tmp_path / "p" / "train" / "metadata.jsonl"
    recs = [json.loads(x) for x in meta.read_text().splitlines()]
    (tmp_path / "p" / "train" / recs[2]["chosen_file_name"]).write_bytes(b"not a png")
    recs[4]["prompt"] = "  "
    meta.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows = load_pairs(str(tmp_path / "p"), "train")
    with pytest.raises(BadRowError, match=r"metadata.jsonl:3: chosen image does not decode"):
        rows[2].decode()
    with pytest.raises(BadRowError, match=r"metadata.jsonl:5: the prompt is empty"):
        rows[4].decode()
    assert rows[3].decode()[0]


def test_a_pair_of_one_picture_twice_is_a_bad_row(tmp_path):
    from spatial.reward.data import PairRow

    red = Image.new("RGB", (8, 8), (200, 0, 0))
    with pytest.raises(BadRowError, match="row 7: the chosen and rejected images are the same picture"):
        PairRow("a red square", _png(red), red.copy(), "row 7").decode()
    assert PairRow("a red square", _png(red), Image.new("RGB", (8, 8), (0, 0, 200)), "row 8").decode()


def test_a_datasets_source_without_metadata_jsonl_goes_through_load_dataset(tmp_path):
    # A parquet dataset folder, as an annotation export pushed to the Hub would be stored.
    img = {"bytes": _png(Image.new("RGB", (16, 16), (200, 30, 30))), "path": None}
    other = {"bytes": _png(Image.new("RGB", (16, 16), (30, 30, 200))), "path": None}
    junk = {"bytes": b"junk", "path": None}
    features = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Image(), "rejected": datasets.Image()})
    ds = datasets.Dataset.from_dict({"prompt": ["a red circle left of a blue square", "a red circle above a blue square"],
                                     "chosen": [img, img], "rejected": [other, junk]}, features=features)  # fmt: skip
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    rows = load_pairs(str(tmp_path), "train")
    assert len(rows) == 2 and rows[0].decode()[1].size == (16, 16)
    with pytest.raises(BadRowError, match=r"\(train\) row 1: rejected image does not decode"):
        rows[1].decode()


def test_a_datasets_source_missing_columns_is_refused_with_the_columns_it_has(tmp_path):
    ds = datasets.Dataset.from_dict({"prompt": ["x"], "image": [b"x"]})
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(DatasetError, match=r"lacks column\(s\) chosen, rejected; has prompt, image"):
        load_pairs(str(tmp_path), "train")


def test_missing_sources_and_splits_give_one_clear_error(tmp_path, pairs_dir):
    with pytest.raises(DatasetError, match="no split 'validation'"):
        load_pairs(str(pairs_dir), "validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty folder"):
        load_pairs(str(tmp_path / "empty"), "train")


def test_load_image_accepts_pil_paths_and_bytes_and_names_what_failed(tmp_path):
    img = Image.new("RGBA", (8, 8))
    img.save(tmp_path / "a.png")
    assert load_image(img).mode == load_image(str(tmp_path / "a.png")).mode == "RGB"
    assert load_image((tmp_path / "a.png").read_bytes()).size == (8, 8)
    with pytest.raises(ImageLoadError, match="image 3: no such file"):
        load_image(str(tmp_path / "missing.png"), "image 3")


def test_default_pairs_are_written_whole_or_not_at_all(tmp_path):
    from spatial.reward.data import ensure_pairs

    folder = tmp_path / "pairs"
    (tmp_path / "pairs.partial" / "train").mkdir(parents=True)  # left by an interrupted run
    (tmp_path / "pairs.partial" / "train" / "metadata.jsonl").write_text('{"prompt": "half"}\n')
    ensure_pairs(str(folder), 6, seed=3, size=16)
    assert not (tmp_path / "pairs.partial").exists()
    assert len(load_pairs(str(folder), "all")) == 6
    ensure_pairs(str(folder), 50, seed=3, size=16)  # already there: kept as it is
    assert len(load_pairs(str(folder), "all")) == 6
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="holds files but no pairs"):
        ensure_pairs(str(tmp_path / "junk"), 6, seed=3)
