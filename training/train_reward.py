"""Train SpatialScore on preference pairs (Bradley-Terry on Gaussian scores, LoRA on Qwen2.5-VL).

    python -m training.train_reward --pairs DIR --backbone assets/toy/vlm --output_dir runs/spatialscore
    accelerate launch --num_processes 2 -m training.train_reward --pairs DIR ...

Every option is a field of `spatial.reward.trainer.RewardTrainingConfig` (see --help).
"""

import sys

from spatial.cli import parse_config
from spatial.reward.data import BadRowError, DatasetError
from spatial.reward.trainer import RewardTrainer, RewardTrainingConfig


def main(argv=None) -> int:
    config = parse_config(RewardTrainingConfig, argv, prog="python -m training.train_reward")
    try:
        out = RewardTrainer(config).run()
    except (BadRowError, DatasetError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        # SIGTERM says which checkpoint it saved; Ctrl-C saves none.
        print(f"{str(e) or 'stopped'}; rerun the same command to continue from the last checkpoint", file=sys.stderr)
        return 130
    print(f"saved SpatialScore to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
