"""Hub write-back: CommitScheduler pushes labels in files unique to each process, retries with
back-off, and makes a last commit on SIGTERM.

The Hub's servers cannot be reached from tests, so `RecordingHub` replaces exactly the two server
calls CommitScheduler makes (`create_repo`, `create_commit`) with ones that record what would be
sent. The scheduler, its thread and the commit operations are the real library.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from PIL import Image

from spatial.annotation import AnnotationConfig, AnnotationStore, HubConfig, PairInput
from spatial.annotation.hub import HubWriteBack, start_writeback

ROOT = Path(__file__).resolve().parents[1]
CONFIG = HubConfig(repo_id="someone/spatial-labels", token="hf_not_a_real_token", every_minutes=60,
                   retries=3, backoff_s=0.01)  # fmt: skip


class RecordingHub(HfApi):
    """HfApi whose server calls record instead of sending; `fail` makes the next commits fail
    (as a dropped connection would); `mirror` also writes every committed file under a folder."""

    def __init__(self, fail: int = 0, mirror: str | Path | None = None):
        super().__init__(token="hf_not_a_real_token")
        self.fail = fail
        self.calls = 0
        self.commits: list[dict[str, bytes]] = []
        self.files: dict[str, bytes] = {}
        self.mirror = Path(mirror) if mirror else None

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("connection reset by peer (simulated)")
        commit = {}
        for op in operations:
            with op.as_file() as f:
                commit[op.path_in_repo] = f.read()
        self.commits.append(commit)
        self.files.update(commit)
        if self.mirror is not None:
            for path, data in commit.items():
                (self.mirror / path).parent.mkdir(parents=True, exist_ok=True)
                (self.mirror / path).write_bytes(data)
        return CommitInfo(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{len(self.commits):040x}",
                          commit_message=kwargs.get("commit_message", ""), commit_description="",
                          oid=f"{len(self.commits):040x}")  # fmt: skip


def make_store(root, n=6) -> AnnotationStore:
    store = AnnotationStore(root, AnnotationConfig(overlap=2))
    store.add_pairs([PairInput(f"a red circle above a blue square #{i}", Image.new("RGB", (8, 8), (i, 9, 9)),
                               Image.new("RGB", (8, 8), (i, 99, 9)), known="a") for i in range(n)])  # fmt: skip
    return store


def label_some(store, who, k):
    """k labels by `who`, each for image a (the known better one) on whichever side it is shown: sides
    are random per showing, so a fixed "left" would split votes and, now and then, leave no majority."""
    ids = []
    for _ in range(k):
        a = store.next_pair(who)
        ids.append(store.submit(who, a.pair_id, "left" if a.left_image == "a" else "right").submission_id)
    return ids


def hub_labels(hub: RecordingHub, writer: str) -> list[dict]:
    data = hub.files.get(f"labels/{writer}/metadata.jsonl", b"")
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture
def keep_sigterm():
    """start_writeback installs a SIGTERM flush in the calling (main) thread: put pytest's back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def stop_all():
    started = []
    yield started.append
    for wb in started:
        wb.stop()


def test_labels_reach_the_hub_in_files_of_this_process(tmp_path, stop_all):
    store = make_store(tmp_path / "s")
    first = label_some(store, "ann", 3) + label_some(store, "bob", 3)
    hub = RecordingHub()
    wb = HubWriteBack(store, CONFIG, hf_api=hub, writer="host-1-aaaa")
    stop_all(wb)
    wb.flush()
    assert [r["submission_id"] for r in hub_labels(hub, "host-1-aaaa")] == first
    assert "README.md" in hub.files and "pairs/train/metadata.jsonl" in hub.files
    assert any(p.startswith("labels/host-1-aaaa/images/") for p in hub.files)
    later = label_some(store, "cat", 2)
    wb.flush()
    assert [r["submission_id"] for r in hub_labels(hub, "host-1-aaaa")] == first + later
    # unchanged files are not sent again: the last commit holds only what changed
    assert "labels/host-1-aaaa/metadata.jsonl" in hub.commits[-1]
    assert not any(p.startswith("labels/host-1-aaaa/images/") and p in hub.commits[0] for p in hub.commits[-1])


def test_a_restart_writes_new_files_and_never_overwrites(tmp_path, stop_all):
    store = make_store(tmp_path / "s")
    before = label_some(store, "ann", 4)
    hub = RecordingHub()
    old = HubWriteBack(store, CONFIG, hf_api=hub, writer="host-1-aaaa")
    stop_all(old)
    old.flush()
    old.stop()
    old_file = hub.files["labels/host-1-aaaa/metadata.jsonl"]
    after = label_some(store, "bob", 4)
    new = HubWriteBack(store, CONFIG, hf_api=hub, writer="host-2-bbbb")  # the process after a restart
    stop_all(new)
    new.flush()
    assert hub.files["labels/host-1-aaaa/metadata.jsonl"] == old_file
    assert [r["submission_id"] for r in hub_labels(hub, "host-1-aaaa")] == before
    assert [r["submission_id"] for r in hub_labels(hub, "host-2-bbbb")] == after
    # What the Hub holds loads as one labels subset with every label exactly once.
    mirror = tmp_path / "mirror"
    for path, data in hub.files.items():
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(data)
    rows = datasets.load_dataset(str(mirror), "labels", cache_dir=str(tmp_path / "cache"))["train"]
    assert sorted(rows["submission_id"]) == sorted(before + after)


def test_a_failed_commit_is_retried_with_back_off(tmp_path, stop_all):
    store = make_store(tmp_path / "s")
    ids = label_some(store, "ann", 2)
    hub = RecordingHub(fail=10**6)  # down while the scheduler starts
    wb = HubWriteBack(store, CONFIG, hf_api=hub, writer="w")
    stop_all(wb)
    with pytest.raises(ConnectionError):
        wb.flush()
    hub.fail = 2  # two more failures, then the Hub answers
    calls = hub.calls
    wb.flush()
    assert hub.calls - calls == 3
    assert [r["submission_id"] for r in hub_labels(hub, "w")] == ids


def test_a_torn_line_from_a_killed_process_is_cut_before_upload(tmp_path, stop_all):
    store = make_store(tmp_path / "s")
    label_some(store, "ann", 3)
    hub = RecordingHub()
    wb = HubWriteBack(store, CONFIG, hf_api=hub, writer="old")
    stop_all(wb)
    wb.flush()
    wb.stop()
    path = store.root / "hub" / "labels" / "old" / "metadata.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])  # killed in the middle of line 3
    new = HubWriteBack(store, CONFIG, hf_api=hub, writer="new")
    stop_all(new)
    new.flush()
    assert path.read_text() == "\n".join(lines[:2]) + "\n"
    assert [r["seq"] for r in hub_labels(hub, "new")] == [3]  # the cut label is written again


def test_two_processes_pushing_one_store_write_each_label_once(tmp_path, stop_all):
    # The app's write-back and a `python -m spatial.annotation push` share the store's hub folder.
    store = make_store(tmp_path / "s")
    hub = RecordingHub()
    app = HubWriteBack(store, CONFIG, hf_api=hub, writer="host-1-app")
    stop_all(app)
    early = label_some(store, "ann", 2)
    app.flush()
    late = label_some(store, "bob", 3)
    push = HubWriteBack(store, CONFIG, hf_api=hub, writer="host-1-push")
    stop_all(push)
    push.flush()
    app.flush()  # its cursor in memory is behind what the push wrote
    ids = [r["submission_id"] for w in ("host-1-app", "host-1-push") for r in hub_labels(hub, w)]
    assert sorted(ids) == sorted(early + late)


def test_write_back_is_off_without_a_repo_and_a_token(tmp_path):
    store = make_store(tmp_path / "s", n=1)
    assert start_writeback(store, HubConfig()) is None
    assert start_writeback(store, HubConfig.from_env({"HF_TOKEN": "hf_x"})) is None
    on = HubConfig.from_env({"SPATIAL_ANNOTATION_DATASET": "me/labels", "HF_TOKEN": "hf_x"})
    assert on.enabled and on.every_minutes == 5
    with pytest.raises(ValueError, match="owner/name"):
        HubConfig(repo_id="no-owner", token="hf_x").validate()


def test_an_unreachable_hub_at_start_leaves_the_app_running_with_write_back_off(tmp_path, capsys, keep_sigterm):
    class Down(RecordingHub):
        def create_repo(self, repo_id, **kwargs):
            raise ConnectionError(f"cannot reach huggingface.co with token {CONFIG.token} (simulated)")

    store = make_store(tmp_path / "s", n=1)
    starter = start_writeback(store, CONFIG, retry_s=3600, hf_api=Down())
    starter.stop()
    assert starter.writeback is None
    err = capsys.readouterr().err
    assert "write-back to someone/spatial-labels is off: ConnectionError" in err and CONFIG.token not in err
    assert "retrying in 3600 s" in err


def test_write_back_starts_once_the_hub_is_back(tmp_path, stop_all, keep_sigterm):
    class Flaky(RecordingHub):
        down = 2

        def create_repo(self, repo_id, **kwargs):
            if self.down:
                self.down -= 1
                raise ConnectionError("cannot reach huggingface.co (simulated)")
            return super().create_repo(repo_id, **kwargs)

    store = make_store(tmp_path / "s")
    labelled = label_some(store, "ann", 2)
    hub = Flaky()
    starter = start_writeback(store, CONFIG, retry_s=0.05, hf_api=hub, writer="host-1-late")
    deadline = time.monotonic() + 30
    while starter.writeback is None and time.monotonic() < deadline:
        time.sleep(0.05)
    starter.stop()
    assert starter.writeback is not None and starter.attempts == 3
    stop_all(starter.writeback)
    starter.writeback.flush()
    assert [r["submission_id"] for r in hub_labels(hub, "host-1-late")] == labelled
    with pytest.raises(ValueError, match="must be a positive number"):
        HubConfig.from_env({"SPATIAL_ANNOTATION_PUSH_MINUTES": "nan"}).validate()


def test_an_append_that_fails_half_way_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    import os

    from spatial.annotation.export import append_labels

    store = make_store(tmp_path / "s", n=4)
    label_some(store, "ann", 1)
    folder = tmp_path / "out"
    assert append_labels(store, folder) == 1
    before = (folder / "metadata.jsonl").read_bytes()
    label_some(store, "ann", 2)

    def disk_full(fd):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        append_labels(store, folder, after_seq=1)
    assert (folder / "metadata.jsonl").read_bytes() == before
    monkeypatch.undo()
    assert append_labels(store, folder, after_seq=1) == 3
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3]  # each label once, every line whole


CHILD = """
import sys, time
from tests.test_annotation_hub import CONFIG, RecordingHub, label_some, make_store
from spatial.annotation.hub import HubWriteBack, flush_on_sigterm

store = make_store(sys.argv[1])
label_some(store, "ann", 2)
wb = HubWriteBack(store, CONFIG, hf_api=RecordingHub(mirror=sys.argv[2]), writer="child")
flush_on_sigterm(wb)
wb.flush()  # the scheduled round; the next one is an hour away
label_some(store, "bob", 3)  # stored, acknowledged, not yet pushed
print("ready", flush=True)
time.sleep(120)
"""


def test_sigterm_pushes_the_last_labels_before_the_process_ends(tmp_path):
    mirror = tmp_path / "hub"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "s"), str(mirror)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # it still ends the way SIGTERM ends a process
    finally:
        proc.kill()
    stored = [r.submission_id for r in AnnotationStore(tmp_path / "s").labels()]
    pushed = [json.loads(line)["submission_id"] for line in (mirror / "labels/child/metadata.jsonl").open()]
    assert len(stored) == 5 and pushed == stored
