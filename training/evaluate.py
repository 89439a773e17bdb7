"""Evaluate a generator or a reward model; the last line printed is a JSON object.

    python -m training.evaluate generator --preset toy [--lora PATH] --prompts FILE --seeds K
    python -m training.evaluate reward --checkpoint PATH --pairs DIR
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "generator": "spatial.generation.evaluate",
        "reward": "spatial.reward.evaluate",
    }
    if not argv or argv[0] not in commands:
        print(f"usage: python -m training.evaluate {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
