"""Preference pairs from a generator's own samples, graded by the SpatialWorld oracle.

    python -m training.sample_pairs --out runs/sample-pairs --num_prompts 1000 [--lora PATH]
    python -m training.train_reward --pairs runs/toy-pairs,runs/sample-pairs ...

Every option is a field of `spatial.reward.sample_pairs.SamplePairsConfig` (see --help). Prints one
JSON object (pairs per split, seconds). Exit codes: 0 done, 1 model unavailable, 2 bad input.
"""

import json
import sys
import time

from tqdm import tqdm

from spatial.cli import parse_config
from spatial.generation.config import AdapterUnavailableError, ConfigError, GenerationConfig, ModelUnavailableError
from spatial.reward.sample_pairs import SamplePairsConfig, write_sample_pairs
from spatial.world import PromptError, sample_prompts


def main(argv=None) -> int:
    config = parse_config(SamplePairsConfig, argv, prog="python -m training.sample_pairs")
    t0 = time.perf_counter()
    try:
        prompts = sample_prompts(config.num_prompts, config.prompt_seed)
        from spatial.generation.lora import load_lora
        from spatial.generation.service import load_pipeline

        pipe = load_pipeline(GenerationConfig.for_preset(config.preset, base_model=config.base_model, device=config.device))
        if config.lora:
            load_lora(pipe, config.lora, "candidate")  # loaded active: every sample is drawn with it on
        with tqdm(total=len(prompts), desc="prompts", unit="prompt", file=sys.stderr) as bar:
            counts = write_sample_pairs(pipe, prompts, config, progress=bar)
    except (ValueError, PromptError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ModelUnavailableError, AdapterUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"out": config.out, **counts, "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
