"""Write a GRPO training prompt file: SpatialWorld prompts, optionally weighted by object count.

    python -m training.write_prompts --out runs/prompts-weighted.txt --weights 2:1,3:2,4:4
    python -m training.train_grpo --prompts runs/prompts-weighted.txt ...

With the defaults below this writes the exact file the shipped RL LoRA trained on (docs/TRAINING.md).
Prints one JSON object (lines written, per object count). Exit code 2 on bad input.
"""

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from spatial.cli import parse_config
from spatial.world import parse_prompt, sample_prompts, weight_by_object_count


@dataclass
class WritePromptsConfig:
    out: str = "runs/prompts-weighted.txt"
    """Prompt file to write, one prompt per line."""
    num_prompts: int = 4000
    """SpatialWorld prompts to draw (GRPO's default training set is 4000 from seed 101)."""
    prompt_seed: int = 101
    """Seed of the SpatialWorld prompts."""
    weights: str = "2:1,3:2,4:4"
    """Copies per prompt by its number of objects, `count:copies` comma-separated; empty: once each."""
    shuffle_seed: int = 0
    """Seed of the shuffle after repeating."""


def parse_weights(text: str) -> dict[int, int]:
    weights = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        count, sep, copies = item.partition(":")
        if not sep or not count.strip().isdigit() or not copies.strip().isdigit():
            raise ValueError(f"weights must look like 2:1,3:2,4:4 (objects:copies), got {item!r}")
        weights[int(count)] = int(copies)
    return weights


def main(argv=None) -> int:
    config = parse_config(WritePromptsConfig, argv, prog="python -m training.write_prompts")
    try:
        if config.num_prompts < 1:
            raise ValueError(f"num_prompts must be at least 1, got {config.num_prompts}")
        lines = weight_by_object_count(sample_prompts(config.num_prompts, config.prompt_seed),
                                       parse_weights(config.weights), config.shuffle_seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    counts = Counter(len(parse_prompt(p).objects) for p in lines)
    print(json.dumps({"out": str(out), "lines": len(lines), "by_objects": dict(sorted(counts.items()))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
