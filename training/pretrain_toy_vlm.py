"""Pretrain the toy Qwen2.5-VL on SpatialWorld ground truth (the toy world's "instruct" backbone).

    python -m training.pretrain_toy_vlm --out assets/toy/vlm

Every option is a field of `spatial.reward.pretrain.PretrainVLMConfig` (see --help).
"""

import sys

from spatial.cli import parse_config
from spatial.reward.pretrain import PretrainVLMConfig, VLMPretrainer


def main(argv=None) -> int:
    config = parse_config(PretrainVLMConfig, argv, prog="python -m training.pretrain_toy_vlm")
    try:
        out = VLMPretrainer(config).run()
    except KeyboardInterrupt:
        print("stopped; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    print(f"saved the toy Qwen2.5-VL backbone to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
