"""Send a training run to Hugging Face Jobs: the same trainer and flags, on Hub hardware.

    python -m training.launch_hub_job --code_repo me/spatial-studio --output_repo me/spatial-runs \
        --run_name grpo-flux-1 --flavor h100x8 --num_processes 8 -- --preset flux-dev --iterations 500

Everything after `--` goes to the trainer (`--kind grpo`: training.train_grpo, `--kind reward`:
training.train_reward) and is checked by its own parser before anything is submitted. The token
is read from HF_TOKEN or the local login and passed as a job secret. Watch the job with
`hf jobs inspect ID` / `hf jobs logs ID`, stop it with `hf jobs cancel ID`.
"""

import json
import sys

from spatial.cli import parse_config
from spatial.hub_jobs import HubJobConfig, HubJobError, check_unmanaged, job_command, run_url, submit


def check_trainer_args(kind: str, args: list[str]) -> None:
    """The trainer's own parser and validation, so a bad flag fails here and not on paid hardware."""
    if kind == "grpo":
        from spatial.rl.config import PRESETS, GRPOConfig

        parse_config(GRPOConfig, args, prog="training.train_grpo", presets=PRESETS)
    else:
        from spatial.reward.trainer import RewardTrainingConfig

        parse_config(RewardTrainingConfig, args, prog="training.train_reward")
    try:
        check_unmanaged(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, trainer_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    cfg = parse_config(HubJobConfig, own, prog="python -m training.launch_hub_job")
    check_trainer_args(cfg.kind, trainer_args)
    if cfg.dry_run:
        print(json.dumps({"image": cfg.image, "flavor": cfg.flavor, "timeout": cfg.timeout,
                          "command": job_command(cfg, trainer_args)}, indent=2))  # fmt: skip
        return 0
    from huggingface_hub import get_token

    token = get_token()  # HF_TOKEN first, then the saved login
    if not token:
        print("error: no Hugging Face token; set HF_TOKEN or run `hf auth login`", file=sys.stderr)
        return 2
    try:
        job = submit(cfg, trainer_args, token=token)
    except HubJobError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"submitted job {job.id}: {job.url}")
    print(f"the run will be uploaded to {run_url(cfg)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
