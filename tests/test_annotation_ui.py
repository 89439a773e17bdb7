"""The Annotate tab's handlers, called in-process without a browser, and its API over HTTP."""

import gradio as gr
import pytest
from gradio_client import Client
from PIL import Image

from spatial.annotation import AnnotationConfig, AnnotationStore, import_world
from ui.annotate import AnnotateHandlers, build_annotate_tab


class Request:
    """Stands in for gr.Request: the tab only reads who is asking through `annotator_id`."""

    def __init__(self, who):
        self.who = who


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore(tmp_path / "store", AnnotationConfig(overlap=2, lease_s=60))
    import_world(s, 6, seed=2)
    return s


@pytest.fixture
def h(store, tmp_path):
    return AnnotateHandlers(lambda: store, lambda profile, request: request.who if request else None,
                            lambda who: who == "boss", export_dir=lambda: tmp_path / "export")  # fmt: skip


def test_nobody_signed_in_sees_a_sign_in_message_and_takes_no_pair(h, store):
    prompt, left, right, pair_id, *_ = h.show_next(None, Request(None))
    assert "Sign in" in prompt and left is None and pair_id == ""
    assert store.progress("anyone").queue == 6 and store.labels() == []
    with pytest.raises(gr.Error, match="Sign in"):
        h.submit("left", "x", "y", "", None, Request(None))


def test_a_label_is_saved_and_the_next_pair_shown(h, store):
    prompt, left, right, pair_id, showing_id, note, progress = h.show_next(None, Request("ann"))
    assert isinstance(left, Image.Image) and isinstance(right, Image.Image)
    assert prompt.lstrip("# ") == store.pair(pair_id).prompt and "5 pairs left for you" in progress
    out = h.submitter("right")(pair_id, showing_id, "the circle is missing", None, Request("ann"))
    assert "Saved: right is better" in out[-1] and out[3] != pair_id
    [label] = store.labels()
    assert (label.label, label.note, label.submission_id) == ("right", "the circle is missing", showing_id)
    again = h.submit("right", pair_id, showing_id, "", None, Request("ann"))  # a double click
    assert "already saved before" in again[-1] and store.label_count() == 1


def test_a_pair_with_an_unreadable_image_is_skipped_with_a_note_instead_of_shown_forever(h, store):
    broken = h.show_next(None, Request("ann"))[3]
    pair = store.pair(broken)
    store.images.path(pair.image_a).write_bytes(b"not a png any more")
    prompt, left, right, shown, showing_id, note, progress = h.show_next(None, Request("ann"))
    assert shown != broken and isinstance(left, Image.Image) and "could not be read was skipped" in progress
    [label] = store.labels()
    assert (label.pair_id, label.label, label.note) == (broken, "skip", "image unreadable")


def test_after_the_most_unreadable_pairs_in_a_row_a_readable_next_one_is_still_shown(h, store, monkeypatch):
    import ui.annotate as annotate

    monkeypatch.setattr(annotate, "MAX_UNREADABLE", 2)
    order = []
    while (a := store.next_pair("probe")) is not None:  # the queue's order, as ann will see it
        order.append(a.pair_id)
        store.submit("probe", a.pair_id, "skip")
    for pid in order[:2]:  # a skip adds no vote: ann gets the pairs in the same order
        store.images.path(store.pair(pid).image_a).write_bytes(b"broken")
    shown = h.show_next(None, Request("ann"))[3]
    assert shown == order[2]  # two skipped, then the third, readable, pair: not an error


def test_statistics_without_a_working_scorer_still_show_the_human_agreement(store, tmp_path):
    def unavailable(prompt, image):
        raise RuntimeError("SpatialScore unavailable: no checkpoint")

    h = AnnotateHandlers(lambda: store, lambda profile, request: request.who if request else None,
                         lambda who: who == "boss", score=unavailable, export_dir=lambda: tmp_path / "x")  # fmt: skip
    for who in ("ann", "bob"):  # both prefer image a, whichever side it is shown on: a majority to score
        a = store.next_pair(who)
        h.submit("left" if a.left_image == "a" else "right", a.pair_id, a.showing_id, "", None, Request(who))
    summary, per, _ = h.stats(None, Request("boss"))
    assert "SpatialScore agreement not computed: SpatialScore unavailable" in summary
    assert sorted(per["annotator"]) == ["ann", "bob"]


def test_bad_submissions_show_an_error_and_change_nothing(h, store):
    mine = h.show_next(None, Request("ann"))[3]
    elsewhere = next(p.id for p in store.pairs() if p.id != mine)
    for pair_id, label, match in [("nope", "left", "no pair with id"), (mine, "best", "unknown label"),
                                  (elsewhere, "left", "not assigned to you")]:  # fmt: skip
        with pytest.raises(gr.Error, match=match):
            h.submit(label, pair_id, "sub-1", "", None, Request("ann"))
    assert store.labels() == []


def test_statistics_and_data_tools_are_for_admins_only(h, store, tmp_path):
    for who in ("ann", "bob"):
        while (a := store.next_pair(who)) is not None:
            store.submit(who, a.pair_id, "left")
    for handler, args in [(h.stats, ()), (h.api_stats, ()), (h.import_pairs, ("world:2",)), (h.export, ())]:
        with pytest.raises(gr.Error, match="admins only"):
            handler(*args, None, Request("ann"))
    assert h.admin_panel(None, Request("ann"))["visible"] is False
    assert h.admin_panel(None, Request("boss"))["visible"] is True
    summary, per_annotator, cohen = h.stats(None, Request("boss"))
    assert "Fleiss' κ" in summary and "Position bias" in summary
    assert list(per_annotator["annotator"]) == ["ann", "bob"] and list(per_annotator["labels"]) == [6, 6]
    assert cohen["shared"].tolist() == [6]
    assert "2 pairs added" in h.import_pairs("world:2:77", None, Request("boss"))
    assert "12 labels" in h.export(None, Request("boss")) and (tmp_path / "export" / "README.md").is_file()


def test_the_tab_serves_its_api_to_scripts(store):
    with gr.Blocks() as demo:
        with gr.Tab("Annotate"):
            build_annotate_tab(lambda: store, lambda profile, request: request.headers.get("x-annotator"),
                               lambda who: False)  # fmt: skip
    demo.queue().launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, headers={"x-annotator": "script"}, verbose=False)
        shown = client.predict(api_name="/annotate_next")
        ack = client.predict(shown["pair_id"], shown["submission_id"], "tie", "", api_name="/annotate_submit")
        retry = client.predict(shown["pair_id"], shown["submission_id"], "tie", "", api_name="/annotate_submit")
        assert (ack["stored"], ack["duplicate"], retry["duplicate"], retry["seq"]) == (True, False, True, ack["seq"])
        with pytest.raises(Exception, match="admins only"):
            client.predict(api_name="/annotate_stats")
    finally:
        demo.close()
    [label] = store.labels()
    assert (label.annotator, label.label) == ("script", "tie")


def test_a_store_that_cannot_write_answers_with_a_message_not_a_trace(h, store, monkeypatch):
    import sqlite3

    _, _, _, pair_id, showing_id, *_ = h.show_next(None, Request("ann"))

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "submit", locked)
    with pytest.raises(gr.Error, match="could not be read or written just now"):
        h.submit("left", pair_id, showing_id, "", None, Request("ann"))
    with pytest.raises(gr.Error, match="could not be read or written just now"):
        h.api_submit(pair_id, showing_id, "left", "", None, Request("ann"))
