"""Gradio forms built from config dataclasses, so the Train tab and the CLIs share names,
defaults, help texts and validation."""

from __future__ import annotations

import dataclasses
import typing

import gradio as gr

from spatial.cli import _base_type, coerce, field_docs


# Field-name words that read as acronyms or brand spellings in a label.
_SPELLINGS = {"sde": "SDE", "lora": "LoRA", "kl": "KL", "ema": "EMA", "nfe": "NFE", "vae": "VAE", "gpu": "GPU",
              "lr": "LR", "id": "ID", "hub": "Hub"}


def _label(name: str) -> str:
    """`sde_window` -> "SDE window", `lora_rank` -> "LoRA rank", `top_k` -> "Top k"."""
    words = [_SPELLINGS.get(w, w) for w in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def component_for(cls, field: dataclasses.Field, value, elem_id: str | None = None,
                  choices: list | None = None) -> gr.components.Component:  # fmt: skip
    tp = _base_type(typing.get_type_hints(cls)[field.name])
    common = {"label": _label(field.name), "info": field_docs(cls).get(field.name), "elem_id": elem_id}
    if choices is not None:
        return gr.Dropdown(choices=choices, value=value, **common)
    if tp is bool:
        return gr.Checkbox(value=bool(value), **common)
    if tp is int:
        return gr.Number(value=value, precision=0, **common)
    if tp is float:
        return gr.Number(value=value, **common)
    return gr.Textbox(value="" if value is None else str(value), max_lines=1, **common)


class DataclassForm:
    """Components for some fields of a config dataclass and the code to read them back."""

    def __init__(self, cls, shown: list[str], defaults: dict | None = None, hidden: tuple[str, ...] = (),
                 elem_prefix: str | None = None, choices: dict[str, list] | None = None,
                 presets: dict[str, dict] | None = None):  # fmt: skip
        """`presets`: named defaults chosen by the form's `preset` field; the fields not shown then
        come from the chosen preset, not from `defaults`."""
        self.cls = cls
        self.defaults = defaults or {}
        self.presets = presets or {}
        self.fields = [f for f in dataclasses.fields(cls) if f.name in shown and f.name not in hidden]
        base = cls(**self.defaults)
        self.components = [component_for(cls, f, getattr(base, f.name), elem_prefix and f"{elem_prefix}-{f.name}",
                                         (choices or {}).get(f.name)) for f in self.fields]  # fmt: skip

    def component(self, name: str) -> gr.components.Component:
        return self.components[[f.name for f in self.fields].index(name)]

    def values_for(self, defaults: dict) -> list:
        """What each component shows for a config built from `defaults` (e.g. another preset)."""
        config = self.cls(**defaults)
        return [getattr(config, f.name) if getattr(config, f.name) is not None else "" for f in self.fields]

    def build(self, values: list, **fixed):
        """The dataclass from form values (plus fixed fields); ValueError names the bad field."""
        given = {}
        for f, v in zip(self.fields, values):
            try:
                given[f.name] = coerce(self.cls, f.name, v)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{_label(f.name)}: {e}") from None
        defaults = self.presets.get(given.get("preset"), self.defaults)
        config = self.cls(**{**defaults, **given, **fixed})
        if hasattr(config, "validate"):
            config.validate()
        return config
