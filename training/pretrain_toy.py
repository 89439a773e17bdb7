"""Train the toy FLUX from scratch on SpatialWorld (autoencoder, then transformer); resumable.

    python -m training.pretrain_toy --out assets/toy/flux
    # data-parallel, same steps as one process (each trains its half of every global batch):
    OMP_NUM_THREADS=1 accelerate launch --config_file configs/accelerate/cpu_2proc.yaml \
        -m training.pretrain_toy --out runs/toy-flux --threads 1
"""

import os

# Sleep instead of spinning in OpenMP barriers: on a shared CPU, spinning threads starve each other
# (an autoencoder step measured 5.3 s spinning vs 0.6 s passive with other jobs running).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from spatial.cli import parse_config  # noqa: E402
from spatial.generation.config import PretrainConfig  # noqa: E402


def main(argv=None) -> int:
    config = parse_config(PretrainConfig, argv, prog="python -m training.pretrain_toy")
    from spatial.generation.pretrain import ToyPretrainer  # diffusers loads only for a valid config

    try:
        out = ToyPretrainer(config).run()
    except KeyboardInterrupt as e:
        print(f"stopped: {e}; rerun the same command to resume")
        return 130
    print(f"saved the toy FLUX pipeline to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
