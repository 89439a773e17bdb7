"""Preference pairs from a FLUX generator's own samples, graded by the SpatialWorld oracle.

A SpatialScore trained only on SpatialWorld renders has never seen what a generator draws: smeared,
half-formed shapes. A GRPO policy drifts into exactly those images and the reward, asked about
images it never saw, can rate them highly (docs/TRAINING.md, "Spatial-RL"). These pairs put the
generator's images in front of the reward: for every prompt a group of samples, drawn the ways a
run draws them (the GRPO sampler's SDE samples, deterministic renders, and few-step renders whose
shapes are still smeared), each graded by the oracle; a pair is two samples of one prompt whose
grades differ by at least a margin, the better one chosen. In the paper's terms this is automatic
annotation of model outputs; on a Space the same layout comes from the Annotate tab instead.

The folder layout is the SpatialWorld pair layout (`spatial.world.pairs`), so `train_reward --pairs`
reads it, alone or next to render pairs (`--pairs A,B`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from spatial.world import check
from spatial.world.pairs import save_content_addressed


@dataclass
class SamplePairsConfig:
    """Pairs of a generator's samples for one prompt, the better one (by the oracle) chosen."""

    out: str = "runs/sample-pairs"
    """Output folder (SpatialWorld pair layout)."""
    preset: str = "toy"
    """Generation preset of the generator: `toy` or `flux-dev` (the oracle reads SpatialWorld prompts only)."""
    base_model: str | None = None
    """Base FluxPipeline folder or Hub id; empty: the preset's."""
    lora: str | None = None
    """LoRA folder or Hub id to sample from instead of the base model (e.g. a GRPO checkpoint)."""
    num_prompts: int = 1000
    """SpatialWorld prompts to sample for."""
    prompt_seed: int = 202
    """Their SpatialWorld seed (keep apart from evaluation seeds 4242 and 9001)."""
    seed: int = 0
    """Seed of the initial noise and the SDE noise."""
    sde_samples: int = 4
    """Samples from the GRPO sampler (one shared start per prompt, SDE noise on the first steps)."""
    sde_steps: int = 8
    """Steps of those samples (GRPO's `sample_steps`)."""
    sde_window: int = 2
    """Stochastic steps among them (GRPO's `sde_window`; 0: all)."""
    noise_level: float = 0.7
    """SDE noise level a (GRPO's `noise_level`)."""
    ode_steps: str = "20,8,3,2"
    """One deterministic render per entry, each from its own start, with that many steps (2-3 steps
    leave shapes smeared, like the images a reward-hacking policy drew)."""
    guidance: float = 3.5
    size: int = 32
    pairs_per_prompt: int = 3
    """At most this many pairs per prompt (drawn among those whose grades differ enough)."""
    margin: float = 0.5
    """Smallest grade difference that makes a pair (grades are in [0, 2] less any extras penalty)."""
    extra_penalty: float = 0.0
    """Grade taken off per object-sized blob the prompt did not ask for (the oracle's `extras`). A
    reward trained without it can learn "more shapes, more likely the named ones are there", and a
    policy then sprays unrequested objects (docs/TRAINING.md); 0.5 makes one extra cost a pair."""
    test_fraction: float = 0.1
    """Fraction of prompts (the last ones) whose pairs form the test split."""
    device: str = "auto"
    """`auto`, `cpu` or `cuda`."""

    def steps_list(self) -> list[int]:
        try:
            steps = [int(s) for s in self.ode_steps.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"ode_steps must be whole numbers separated by commas, got {self.ode_steps!r}") from None
        if any(s < 1 for s in steps):
            raise ValueError(f"every entry of ode_steps must be at least 1, got {self.ode_steps!r}")
        return steps

    def validate(self) -> None:
        steps = self.steps_list()
        if self.num_prompts < 1 or self.pairs_per_prompt < 1:
            raise ValueError("num_prompts and pairs_per_prompt must be at least 1")
        if self.sde_samples < 0 or self.sde_steps < 1 or not 0 <= self.sde_window <= self.sde_steps:
            raise ValueError("need sde_samples >= 0, sde_steps >= 1 and 0 <= sde_window <= sde_steps")
        if self.sde_samples + len(steps) < 2:
            raise ValueError("a group needs at least two samples (sde_samples + entries of ode_steps)")
        if not 0 <= self.test_fraction < 1:
            raise ValueError("test_fraction must be in [0, 1)")
        if not 0 <= self.margin <= 2:
            raise ValueError("margin must be in [0, 2] (grades are in [0, 2])")
        if not 0 <= self.extra_penalty <= 2:
            raise ValueError(f"extra_penalty must be in [0, 2], got {self.extra_penalty}")


def grade(verdict, extra_penalty: float = 0.0) -> float:
    """Fraction of named objects found plus fraction of relations true, in [0, 2]: a sample with every
    object drawn beats one with a smeared object, and among complete ones the right layout wins;
    less `extra_penalty` per unrequested object."""
    objects = sum(o["found"] for o in verdict.objects) / max(1, len(verdict.objects))
    relations = sum(r["verdict"] == "true" for r in verdict.relations) / max(1, len(verdict.relations))
    return objects + relations - extra_penalty * len(verdict.extras)


def choose_pairs(grades: list[float], n: int, margin: float, rng: random.Random) -> list[tuple[int, int]]:
    """Up to n (better, worse) index pairs with grade difference >= margin, in random order, each
    sample in at most two pairs (so one lucky sample does not make every pair). The better grade is
    strictly higher even at margin 0: a tie (or a sample against itself) states no preference."""
    candidates = [(i, j) for i in range(len(grades)) for j in range(len(grades))
                  if grades[i] > grades[j] and grades[i] - grades[j] >= margin]  # fmt: skip
    rng.shuffle(candidates)
    used: dict[int, int] = {}
    out = []
    for i, j in candidates:
        if len(out) == n:
            break
        if used.get(i, 0) < 2 and used.get(j, 0) < 2:
            out.append((i, j))
            used[i] = used.get(i, 0) + 1
            used[j] = used.get(j, 0) + 1
    return out


@torch.no_grad()
def sample_group(pipe, prompt: str, seed: int, config: SamplePairsConfig) -> list[tuple[str, object]]:
    """(how it was drawn, PIL image) for one prompt: the SDE samples, then the deterministic renders."""
    from spatial.generation import sampling
    from spatial.rl.sampling import sample_trajectory

    c = config
    out = []
    if c.sde_samples:
        cond = sampling.encode_prompts(pipe, [prompt] * c.sde_samples)
        noise = sampling.initial_latents(pipe, [seed] * c.sde_samples, c.size).float()
        sigmas = sampling.sigma_schedule(pipe, c.sde_steps, c.size).float().cpu()
        guidance = sampling.guidance_vector(pipe, c.guidance, c.sde_samples)
        generators = [torch.Generator().manual_seed(seed * 1009 + k) for k in range(c.sde_samples)]

        def velocity(x, sigma, cond, g):
            return sampling.velocity(pipe, x.to(cond.embeds.dtype), sigma, cond, g).float()

        traj = sample_trajectory(velocity, noise, sigmas, cond, guidance, c.noise_level, generators,
                                 sde_steps=c.sde_window or None)  # fmt: skip
        images = sampling.decode(pipe, traj.final.to(pipe.vae.dtype), c.size)
        out += [(f"sde-{c.sde_steps}", im) for im in images]
    for k, steps in enumerate(c.steps_list()):
        (image,) = sampling.generate_images(pipe, [prompt], [seed + 1 + k], steps, c.guidance, c.size)
        out.append((f"ode-{steps}", image))
    return out


def write_sample_pairs(pipe, prompts: list[str], config: SamplePairsConfig, progress=None) -> dict:
    """Draw, grade and pair samples for every prompt; write `config.out/{train,test}`; return counts."""
    out, seed = Path(config.out), config.seed
    n_test = round(len(prompts) * config.test_fraction)
    counts = {"train": 0, "test": 0}
    files = {}
    for split in ("train", "test"):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        files[split] = open(out / split / "metadata.jsonl", "w")
    try:
        for i, prompt in enumerate(prompts):
            split = "test" if i >= len(prompts) - n_test else "train"
            group = sample_group(pipe, prompt, seed * 1_000_003 + i, config)
            grades = [grade(check(im, prompt), config.extra_penalty) for _, im in group]
            rng = random.Random(f"sample-pairs:{seed}:{i}")
            for a, b in choose_pairs(grades, config.pairs_per_prompt, config.margin, rng):
                rec = {
                    "prompt": prompt,
                    "chosen_file_name": save_content_addressed(group[a][1], out / split / "images"),
                    "rejected_file_name": save_content_addressed(group[b][1], out / split / "images"),
                    "chosen_grade": round(grades[a], 4),
                    "rejected_grade": round(grades[b], 4),
                    "chosen_sampler": group[a][0],
                    "rejected_sampler": group[b][0],
                }
                files[split].write(json.dumps(rec) + "\n")
                counts[split] += 1
            if progress is not None:
                progress.update(1)
    finally:
        for f in files.values():
            f.close()
    return counts
