"""SpatialWorld command line.

    python -m spatial.world prompts --n N --seed S
    python -m spatial.world pairs --n N --seed S --out DIR [--size PX] [--test-fraction F]
    python -m spatial.world check --prompt TEXT IMAGE [IMAGE ...]
    python -m spatial.world render --prompt TEXT --out FILE [--seed S] [--size PX]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from PIL import UnidentifiedImageError


class UsageError(Exception):
    pass


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit code 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m spatial.world", description="Procedural spatial prompts, pairs and an oracle.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("prompts", help="print N prompts, one per line")
    p.add_argument("--n", type=_positive, required=True)
    p.add_argument("--seed", type=_seed, default=0)
    p = sub.add_parser("pairs", help="write a preference-pair dataset folder")
    p.add_argument("--n", type=_positive, required=True)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=_positive, default=64, help="image side in pixels (default 64)")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p = sub.add_parser("check", help="judge images against a prompt (one JSON object per image)")
    p.add_argument("--prompt", required=True)
    p.add_argument("images", nargs="+")
    p = sub.add_parser("render", help="render a scene that satisfies a prompt")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--size", type=_positive, default=256)
    return ap


def run(args) -> int:
    from . import PromptError, check, parse_prompt, sample_prompts, write_pairs

    if args.command == "prompts":
        for prompt in sample_prompts(args.n, args.seed):
            print(prompt)
        return 0
    if args.command == "pairs":
        from tqdm import tqdm

        if args.size < 16:
            raise UsageError("--size must be at least 16 pixels")
        t0 = time.perf_counter()
        with tqdm(total=args.n, desc="pairs", unit="pair", file=sys.stderr) as bar:
            counts = write_pairs(args.out, args.n, args.seed, args.size, args.test_fraction, progress=bar)
        print(json.dumps({"out": args.out, **counts, "seconds": round(time.perf_counter() - t0, 2)}))
        return 0
    if args.command == "check":
        try:
            spec = parse_prompt(args.prompt)
        except PromptError as e:
            raise UsageError(str(e)) from None
        for path in args.images:
            try:
                result = check(path, spec)
            except (FileNotFoundError, IsADirectoryError):
                raise UsageError(f"no such image: {path}") from None
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise UsageError(f"cannot read {path} as an image ({type(e).__name__})") from None
            print(json.dumps({"image": path, **result.to_dict()}))
        return 0
    if args.command == "render":
        from .render import render
        from .sampler import scene_for

        try:
            scene = scene_for(parse_prompt(args.prompt), args.seed)
        except PromptError as e:
            raise UsageError(str(e)) from None
        render(scene, args.size).save(args.out)
        print(json.dumps({"out": args.out}))
        return 0
    raise UsageError(f"unknown command {args.command}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
