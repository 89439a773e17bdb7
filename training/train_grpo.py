"""Spatial-RL: GRPO on FLUX with a LoRA, rewarded by SpatialScore (or the judge, or the oracle).

    accelerate launch -m training.train_grpo --preset toy --reward spatialscore --output_dir runs/grpo
    python -m training.train_grpo --preset toy --reward oracle --iterations 50 --top_k 2
"""

import sys

from spatial.cli import parse_config
from spatial.rl.config import PRESETS, GRPOConfig
from spatial.rl.run import RunConfigError, build_trainer


def main(argv=None) -> int:
    config = parse_config(GRPOConfig, argv, prog="python -m training.train_grpo", presets=PRESETS)
    try:
        trainer = build_trainer(config)
    except RunConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
