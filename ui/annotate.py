"""The Annotate tab: two images for a prompt, the annotator picks the better one (or both good,
both wrong, skip). The store in spatial.annotation does the work; this module shows and wires.

`build_annotate_tab` must be called inside the caller's `gr.Tab` (it loads the first pair when that
tab is selected) within a `gr.Blocks`. Pass:

- `get_store()` -> AnnotationStore, called on first use (nothing is opened at build time);
- `annotator_id(profile, request)` -> the signed-in user's id, or None when nobody is signed in;
- `is_admin(annotator_id)` -> bool: only admins see statistics and the import/export tools;
- optionally `score(prompt, image) -> float` (e.g. SpatialScore) for its agreement with the
  human majority, and `export_dir()` -> where the admin's Export button writes (default
  `<store root>/export`).

API endpoints (for scripts, e.g. gradio_client): `/annotate_next` -> JSON of the next pair,
`/annotate_submit(pair_id, submission_id, label, note)` -> JSON acknowledgement (sent only once the
label is on disk), `/annotate_stats` -> JSON statistics (admins).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd

from spatial.annotation import (
    LABELS, AnnotationError, AnnotationStore, Assignment, LeaseExpired, agreement_report, export, import_source,
)  # fmt: skip

AnnotatorId = Callable[[gr.OAuthProfile | None, gr.Request | None], str | None]

BUTTONS = {  # label -> (button text with its shortcuts, variant)
    "left": ("← 1 · Left is better", "primary"),
    "right": ("2 → · Right is better", "primary"),
    "tie": ("↑ 3 · Both good", "secondary"),
    "both_wrong": ("↓ 4 · Both wrong", "secondary"),
    "skip": ("S · Skip", "secondary"),
}
STORE_TROUBLE = (sqlite3.Error, OSError)
MAX_UNREADABLE = 5  # pairs skipped in a row for unreadable images before giving up
SAID = {"left": "left is better", "right": "right is better", "tie": "both good", "both_wrong": "both wrong",
        "skip": "skipped"}  # fmt: skip

GUIDELINES = """
**Which image follows the prompt's spatial layout better?** Read the prompt, then compare where the
named objects are in each image.

- **Left / Right is better** (1 / 2, or ← / →): that image gets more of the prompt's objects and
  relations right ("left of", "above", ...). Judge layout first; image quality only breaks ties.
- **Both good** (3 or ↑): both images satisfy every relation in the prompt.
- **Both wrong** (4 or ↓): neither image satisfies the prompt, and neither is closer.
- **Skip** (S): you cannot tell (unreadable prompt, broken image). The pair goes to someone else.

Which image appears on which side is random. Each pair is shown to several people; your answer
counts once and cannot be changed. A note is optional (e.g. "the blue square is missing").
Shortcuts work when the note box does not have the focus.
"""

SHORTCUTS_JS = """
() => {
  if (window.__spatialAnnotateKeys) return;
  window.__spatialAnnotateKeys = true;
  const keys = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right", "3": "tie",
                "ArrowUp": "tie", "4": "both_wrong", "ArrowDown": "both_wrong", "s": "skip", "S": "skip"};
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    const name = keys[e.key];
    const button = name && document.getElementById("annotate-" + name);
    if (!button || button.offsetParent === null || button.disabled) return;  // tab hidden or busy
    e.preventDefault();
    button.click();
  });
}
"""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def stats_markdown(report) -> str:
    r = report
    pos, gold = r.position, r.gold
    lines = [
        f"**Labels** {r.labels} ({r.skips} skips) · **pairs labelled** {r.pairs_labelled} "
        f"({r.pairs_multi} with two or more labels)",
        f"**Agreement** {_pct(r.percent_agreement)} of rater pairs agree · Fleiss' κ {_num(r.fleiss_kappa)} · "
        f"Krippendorff's α (nominal) {_num(r.krippendorff_alpha)}",
        f"**Position bias** left {pos['left']} / right {pos['right']} ({_pct(pos['left_share'])} left"
        + ("" if pos["p_value"] is None else f", binomial p = {pos['p_value']:.3g}") + ")",
        f"**Gold pairs** {gold['correct']} of {gold['labels']} labels correct ({_pct(gold['accuracy'])})",
    ]
    if r.scorer is not None:
        s = r.scorer
        lines.append(f"**Scorer vs human majority** agrees on {s['agree']} of {s['pairs']} pairs "
                     f"({_pct(s['agreement'])}), {s['tied']} tied")  # fmt: skip
    return "\n\n".join(lines)


def store_trouble(e: Exception) -> str:
    print(f"annotate: store error {type(e).__name__}: {e}", file=sys.stderr)  # the details stay in the log
    return ("The annotation store could not be read or written just now (the server's disk or database is "
            "busy or full); nothing was lost on your side. Please try again in a moment.")


class AnnotateHandlers:
    """The tab's event handlers, callable without a browser (tests call them directly)."""

    def __init__(self, get_store: Callable[[], AnnotationStore], annotator_id: AnnotatorId,
                 is_admin: Callable[[str | None], bool], score: Callable | None = None,
                 export_dir: Callable[[], Path] | None = None):  # fmt: skip
        self.get_store = get_store
        self.annotator_id = annotator_id
        self.is_admin = is_admin
        self.score = score
        self.export_dir = export_dir

    # ---- helpers -------------------------------------------------------------------------------

    def _who(self, profile, request) -> str:
        who = self.annotator_id(profile, request)
        if not who:
            raise gr.Error("Sign in to annotate.")
        return who

    def _admin(self, profile, request) -> str:
        who = self.annotator_id(profile, request)
        if not self.is_admin(who):
            raise gr.Error("Statistics and data tools are for admins only.")
        return who

    def progress_text(self, who: str) -> str:
        p = self.get_store().progress(who)
        waiting = f" (+{p.waiting} held by other annotators now)" if p.waiting else ""
        return (f"**{who}**: {p.labelled} labelled · {p.available} pairs left for you{waiting} · "
                f"{p.queue} of {p.pairs} pairs still need labels")  # fmt: skip

    def _show(self, who: str, assignment: Assignment | None, status: str = ""):
        store = self.get_store()
        # A pair whose image file is gone or damaged would come back at every request (its lease is
        # renewed): skip it for this annotator, say so, and show the next one.
        for skipped in range(MAX_UNREADABLE + 1):
            if assignment is None:
                break
            try:
                left, right = store.load_image(assignment.left), store.load_image(assignment.right)
            except (OSError, ValueError) as e:
                print(f"annotate: pair {assignment.pair_id} has an unreadable image ({type(e).__name__}); skipped",
                      file=sys.stderr)  # fmt: skip
                store.submit(who, assignment.pair_id, "skip", assignment.showing_id, "image unreadable")
                if skipped == MAX_UNREADABLE:
                    raise gr.Error("Several pairs in a row have unreadable images; ask an admin to check the "
                                   "annotation store.") from None  # fmt: skip
                status = "A pair whose image could not be read was skipped."
                assignment = store.next_pair(who)
                continue
            progress = self.progress_text(who) + (f"  \n{status}" if status else "")
            return (f"### {assignment.prompt}", left, right, assignment.pair_id, assignment.showing_id, "", progress)
        progress = self.progress_text(who) + (f"  \n{status}" if status else "")
        return ("### Nothing left to label for you. Thank you!", None, None, "", "", "", progress)

    # ---- events --------------------------------------------------------------------------------

    def show_next(self, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None):
        """Prompt, left image, right image, pair id, showing id, note (cleared), progress."""
        who = self.annotator_id(profile, request)
        if not who:
            return ("### Sign in to annotate.", None, None, "", "", "", "")
        try:
            return self._show(who, self.get_store().next_pair(who))
        except AnnotationError as e:
            raise gr.Error(str(e)) from None
        except STORE_TROUBLE as e:  # disk full, database locked: a message, not a trace
            raise gr.Error(store_trouble(e)) from None

    def submit(self, label: str, pair_id: str, showing_id: str, note: str | None,
               profile: gr.OAuthProfile | None = None, request: gr.Request | None = None):  # fmt: skip
        """Store the label (returns only once it is durable), then show the next pair."""
        who = self._who(profile, request)
        store = self.get_store()
        status = ""
        if pair_id:
            try:
                ack = store.submit(who, pair_id, label, showing_id or None, note or None)
                status = f"Saved: {SAID[ack.label]}." + (" (already saved before)" if ack.duplicate else "")
            except LeaseExpired as e:
                gr.Warning(str(e))
                status = "Not saved: the pair had timed out."
            except AnnotationError as e:
                raise gr.Error(str(e)) from None
            except STORE_TROUBLE as e:  # disk full, database locked: a message, not a trace
                raise gr.Error(store_trouble(e)) from None
        try:
            return self._show(who, store.next_pair(who), status)
        except AnnotationError as e:
            raise gr.Error(f"{status} {e}".strip()) from None
        except STORE_TROUBLE as e:  # disk full, database locked: a message, not a trace
            raise gr.Error(store_trouble(e)) from None

    def submitter(self, label: str) -> Callable:
        """The click handler of one label's button (Gradio reads its hints to pass profile and request)."""

        def submit(pair_id: str, showing_id: str, note: str, profile: gr.OAuthProfile | None,
                   request: gr.Request):  # fmt: skip
            return self.submit(label, pair_id, showing_id, note, profile, request)

        return submit

    def admin_panel(self, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None):
        return gr.update(visible=bool(self.is_admin(self.annotator_id(profile, request))))

    def stats(self, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None):
        """Summary markdown, per-annotator table, Cohen's kappa table (admins only)."""
        self._admin(profile, request)
        report, note = self._report()
        per = pd.DataFrame(report.per_annotator, columns=["annotator", "labels", "skips", "gold", "gold_accuracy",
                                                          "left_share"])  # fmt: skip
        cohen = pd.DataFrame(report.cohen, columns=["annotators", "shared", "kappa"])
        return stats_markdown(report) + note, per.round(3), cohen.round(3)

    def _report(self):
        """The agreement report, and a note when SpatialScore could not take part."""
        store = self.get_store()
        if self.score is not None:
            try:
                return agreement_report(store.labels(), self.score, store.load_image), ""
            except RuntimeError as e:  # the scorer is unavailable: the human statistics still stand
                return agreement_report(store.labels()), f"\n\n_SpatialScore agreement not computed: {e}_"
        return agreement_report(store.labels()), ""

    def import_pairs(self, spec: str, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None):
        self._admin(profile, request)
        try:
            return f"Imported: {import_source(self.get_store(), spec)}."
        except AnnotationError as e:
            raise gr.Error(str(e)) from None
        except STORE_TROUBLE as e:  # disk full, database locked: a message, not a trace
            raise gr.Error(store_trouble(e)) from None

    def export(self, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None):
        self._admin(profile, request)
        store = self.get_store()
        out = self.export_dir() if self.export_dir else store.root / "export"
        try:
            return f"{export(store, out)}. Load it with `datasets.load_dataset(DIR, \"pairs\")`."
        except AnnotationError as e:
            raise gr.Error(str(e)) from None
        except STORE_TROUBLE as e:  # disk full, database locked: a message, not a trace
            raise gr.Error(store_trouble(e)) from None

    # ---- JSON API ------------------------------------------------------------------------------

    def api_next(self, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None) -> dict:
        """The next pair for the signed-in annotator: pair_id, submission_id, prompt, left/right
        image hashes (pair_id is null when nothing is left)."""
        who = self._who(profile, request)
        try:
            a = self.get_store().next_pair(who)
        except AnnotationError as e:
            raise gr.Error(str(e)) from None
        except STORE_TROUBLE as e:  # disk full, database locked: a message, not a trace
            raise gr.Error(store_trouble(e)) from None
        if a is None:
            return {"pair_id": None}
        return {"pair_id": a.pair_id, "submission_id": a.showing_id, "prompt": a.prompt, "left": a.left,
                "right": a.right, "lease_until": a.lease_until}  # fmt: skip

    def api_submit(self, pair_id: str, submission_id: str, label: str, note: str = "",
                   profile: gr.OAuthProfile | None = None, request: gr.Request | None = None) -> dict:  # fmt: skip
        """Store one label; the reply comes only after the label is on disk. Labels: left, right,
        tie, both_wrong, skip. Resending the same submission_id stores nothing new."""
        who = self._who(profile, request)
        try:
            ack = self.get_store().submit(who, pair_id, label, submission_id or None, note or None)
        except AnnotationError as e:
            raise gr.Error(str(e)) from None
        except STORE_TROUBLE as e:  # disk full, database locked: a message, not a trace
            raise gr.Error(store_trouble(e)) from None
        return {"stored": True, "duplicate": ack.duplicate, "seq": ack.seq, "pair_id": ack.pair_id,
                "label": ack.label, "verdict": ack.verdict}  # fmt: skip

    def api_stats(self, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None) -> dict:
        """Agreement statistics (admins only)."""
        self._admin(profile, request)
        return self._report()[0].to_dict()


def build_annotate_tab(get_store: Callable[[], AnnotationStore], annotator_id: AnnotatorId,
                       is_admin: Callable[[str | None], bool], score: Callable | None = None,
                       export_dir: Callable[[], Path] | None = None,
                       guidelines: str = GUIDELINES) -> AnnotateHandlers:  # fmt: skip
    """Build the Annotate tab's components inside the caller's `gr.Tab` and wire its events."""
    h = AnnotateHandlers(get_store, annotator_id, is_admin, score, export_dir)
    tab = gr.context.Context.block  # the caller's gr.Tab: load a pair when it is opened
    root = gr.context.Context.root_block

    progress = gr.Markdown(elem_id="annotate-progress")
    prompt = gr.Markdown("### Open this tab signed in to start.", elem_id="annotate-prompt")
    with gr.Row(equal_height=True):
        left = gr.Image(label="Left (1 / ←)", type="pil", height=480, interactive=False,
                        elem_id="annotate-left-image")  # fmt: skip
        right = gr.Image(label="Right (2 / →)", type="pil", height=480, interactive=False,
                         elem_id="annotate-right-image")  # fmt: skip
    with gr.Row():
        buttons = {name: gr.Button(text, variant=variant, elem_id=f"annotate-{name}")
                   for name, (text, variant) in BUTTONS.items()}  # fmt: skip
    note = gr.Textbox(label="Note (optional)", max_lines=2, max_length=2000, elem_id="annotate-note")
    pair_id = gr.Textbox(visible=False, elem_id="annotate-pair-id")
    showing_id = gr.Textbox(visible=False, elem_id="annotate-showing-id")
    with gr.Accordion("Guidelines", open=False):
        gr.Markdown(guidelines)
    with gr.Accordion("Statistics and data (admins)", open=False, visible=False) as admin:
        refresh = gr.Button("Refresh statistics")
        summary = gr.Markdown()
        per_annotator = gr.Dataframe(label="Per annotator", interactive=False)
        cohen = gr.Dataframe(label="Cohen's κ per annotator pair", interactive=False)
        with gr.Row():
            source = gr.Textbox(label="Import pairs", placeholder="world:200 · /path/to/pair/folder · owner/dataset",
                                scale=3)  # fmt: skip
            do_import = gr.Button("Import", scale=1)
        do_export = gr.Button("Export dataset folder")
        data_status = gr.Markdown()

    shown = [prompt, left, right, pair_id, showing_id, note, progress]
    if isinstance(tab, gr.Tab):
        tab.select(h.show_next, None, shown, api_name=False, concurrency_limit=None)
        tab.select(h.admin_panel, None, admin, api_name=False)
    if root is not None:
        root.load(None, None, None, js=SHORTCUTS_JS)
    for name, button in buttons.items():
        button.click(h.submitter(name), [pair_id, showing_id, note], shown, api_name=False, trigger_mode="once",
                     concurrency_limit=None)  # the store serialises writes itself; don't queue behind others
    refresh.click(h.stats, None, [summary, per_annotator, cohen], api_name=False)
    do_import.click(h.import_pairs, source, data_status, api_name=False, concurrency_limit=1)
    do_export.click(h.export, None, data_status, api_name=False, concurrency_limit=1)
    gr.api(h.api_next, api_name="annotate_next", concurrency_limit=None)
    gr.api(h.api_submit, api_name="annotate_submit", concurrency_limit=None)
    gr.api(h.api_stats, api_name="annotate_stats")
    return h
