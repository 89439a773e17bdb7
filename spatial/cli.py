"""Command lines generated from config dataclasses (one source of truth for names and defaults).

Every field becomes `--name VALUE`; the field's docstring (the string literal under it) becomes
its help text. Booleans take true/false. `validate()` on the dataclass, if present, runs after
parsing, and a ValueError from it becomes one clear `error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import sys
import textwrap
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def field_docs(cls) -> dict[str, str]:
    """The docstrings written under dataclass fields (`x: int = 1` then `\"\"\"what x is\"\"\"`)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(getattr(nxt, "value", None), ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(tp) -> Any:
    """int | None -> int; Optional[str] -> str."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing))  # annotations under `from __future__ import annotations`
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if args else str
    return tp


def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def coerce(cls, name: str, value: Any) -> Any:
    """Convert a value (e.g. from a form or a command line) to the field's declared type."""
    hints = typing.get_type_hints(cls)
    tp = _base_type(hints[name])
    if value is None or value == "":
        if _optional(hints[name]):
            return None
        if tp is str and _default(cls, name) == "":
            return ""  # a text field whose default is empty ("none given")
        raise ValueError(f"{name} needs a value")
    if tp is bool:
        return value if isinstance(value, bool) else parse_bool(value)
    if tp in (int, float, str):
        if tp in (int, float) and not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"{name} must be a finite number, got {value}")
            if tp is int and not number.is_integer():
                raise ValueError(f"{name} must be a whole number, got {value}")
            if tp is float:
                return number
            exact = isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit())
            return int(value) if exact else int(number)
        return tp(value)
    return value


def require_finite(config) -> None:
    """ValueError naming the first float field of a config dataclass that is NaN or infinite."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value}")


def _default(cls, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else None


def _optional(tp) -> bool:
    if isinstance(tp, str):
        return "None" in tp
    return type(None) in typing.get_args(tp)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser(cls, prog: str | None = None, description: str | None = None,
                 presets: dict[str, dict] | None = None) -> argparse.ArgumentParser:  # fmt: skip
    """One flag per dataclass field, its docstring as help. With `presets`, the defaults shown are
    those of the default preset (what a run without `--preset` gets)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    description = description or (cls.__doc__ or "").strip().splitlines()[0]
    preset = getattr(cls, "preset", None)
    shown = dict(presets.get(preset, {})) if presets is not None else {}
    if shown:
        others = ", ".join(n for n in presets if n != preset)
        description += f" Defaults shown are the {preset!r} preset's; --preset {others} sets its own."
    # No abbreviations: `--output` must not quietly mean `--output_dir` (the job runner refuses managed flags by name).
    parser = _Parser(prog=prog, description=description, allow_abbrev=False)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        default = shown.get(f.name, default)
        conv = parse_bool if tp is bool else (tp if tp in (int, float, str) else str)
        parser.add_argument(f"--{f.name}", type=conv, default=None, metavar=tp.__name__.upper() if hasattr(tp, "__name__") else "VALUE",
                            help=f"{docs.get(f.name, '')} (default: {default})".replace('%', '%%'))  # fmt: skip
    return parser


def parse_config(cls: type[T], argv: list[str] | None = None, prog: str | None = None,
                 presets: dict[str, dict] | None = None) -> T:
    """Parse argv into `cls`. Fields not given keep their defaults: the named `--preset`'s values
    (when `presets` is given and the dataclass has a `preset` field), else the dataclass's own."""
    args = build_parser(cls, prog=prog, presets=presets).parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        base = {}
        if presets is not None:
            name = given.get("preset", getattr(cls, "preset", None))
            if name not in presets:
                raise ValueError(f"unknown preset {name!r}; choose from {', '.join(presets)}")
            base = dict(presets[name])
        config = cls(**{**base, **given})
        if hasattr(config, "validate"):
            config.validate()
    except (TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return config
