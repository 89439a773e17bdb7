"""One interface for everything that scores (prompt, image): SpatialScore, a zero-shot VLM judge
and the SpatialWorld oracle. The app, GRPO and evaluation use only this.

    scorer = load_scorer("spatialscore")            # or "judge", "oracle", a folder, a Hub id
    result = scorer.score(prompts, images)          # batched; result.mu, result.sigma (numpy)
    p = scorer.prob_prefer(prompt, image_a, image_b)

Point scorers (judge, oracle) report sigma = 0, so `prob_prefer` is then 1, 0 or 0.5.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOY_SPATIALSCORE = ROOT / "assets" / "toy" / "spatialscore"
TOY_VLM = ROOT / "assets" / "toy" / "vlm"


@dataclass
class ScoreResult:
    """Per-image Gaussian scores, in input order."""

    mu: np.ndarray
    sigma: np.ndarray


class Scorer(ABC):
    name: str = "scorer"
    pairwise: bool = False
    """True for judges that compare two images in one query (their order can matter)."""

    @abstractmethod
    def score(self, prompts: list[str], images: list) -> ScoreResult:
        """Scores for (prompts[i], images[i]); images are PIL images or paths."""

    @property
    def preference(self) -> str:
        """How two scores become P(a preferred over b) (`spatial.reward.losses.prob_prefer`): a trained
        SpatialScore's own likelihood; for point scorers a step (1, 0, or 0.5 on a tie)."""
        return "thurstone"

    def prob_from(self, result: ScoreResult, i: int, j: int) -> float:
        """P(image i preferred over image j) from scores already computed."""
        from spatial.reward.losses import prob_prefer

        return float(prob_prefer(result.mu[i], result.sigma[i], result.mu[j], result.sigma[j], self.preference))

    def prob_prefer(self, prompt: str, a, b) -> float:
        """P(a preferred over b for prompt)."""
        return self.prob_from(self.score([prompt, prompt], [a, b]), 0, 1)


class SpatialScoreScorer(Scorer):
    """A trained SpatialScore checkpoint (folder written by `SpatialScore.save_pretrained`)."""

    name = "spatialscore"

    def __init__(self, path: str | Path = TOY_SPATIALSCORE, device=None, dtype=None, batch_size: int = 32):
        from spatial.reward.model import SpatialScore

        self.path = str(path)
        self.model = SpatialScore.from_pretrained(path, device=device, dtype=dtype)
        self.batch_size = batch_size

    @property
    def preference(self) -> str:
        return self.model.config.preference

    def score(self, prompts, images) -> ScoreResult:
        return self.model.score(prompts, images, batch_size=self.batch_size)


class ZeroShotJudge(Scorer):
    """A Qwen2.5-VL-Instruct asked whether the image follows the prompt; score = P(yes).

    P(yes) is read from the next-token distribution after the assistant tag, over the answer's
    "yes" and "no" tokens only. In the toy world the pretrained toy backbone plays this role.
    """

    name = "judge"

    def __init__(self, backbone: str | Path = TOY_VLM, device=None, dtype=None, batch_size: int = 16,
                 question: str | None = None, max_pixels: int = 448 * 448):  # fmt: skip
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        from spatial.reward.config import JUDGE_QUESTION
        from spatial.reward.model import pick_device, pick_dtype
        from spatial.reward.processing import load_processor

        self.backbone = str(backbone)
        self.device = pick_device(device)
        self.processor = load_processor(self.backbone, max_pixels=max_pixels)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.backbone, dtype=pick_dtype(self.device, dtype))
        self.model.to(self.device).eval().requires_grad_(False)
        self.question = question or JUDGE_QUESTION
        self.batch_size = batch_size
        tok = self.processor.tokenizer

        def single_tokens(words):
            ids = {tuple(tok.encode(w, add_special_tokens=False)) for w in words}
            return torch.tensor(sorted({i[0] for i in ids if len(i) == 1}))

        self.yes_ids, self.no_ids = single_tokens(["yes", "Yes"]), single_tokens(["no", "No"])
        if not len(self.yes_ids) or not len(self.no_ids):
            raise ValueError(f"{self.backbone}'s tokenizer has no single-token yes/no")

    def score(self, prompts, images) -> ScoreResult:
        import torch

        from spatial.reward.data import load_image
        from spatial.reward.model import ScoringInputError
        from spatial.reward.processing import reserved_token_in, user_turn

        prompts, images = list(prompts), list(images)
        if len(prompts) != len(images):
            raise ScoringInputError(f"got {len(prompts)} prompts but {len(images)} images")
        out = []
        for k in range(0, len(prompts), self.batch_size):
            ps, ims = prompts[k : k + self.batch_size], images[k : k + self.batch_size]
            for i, p in enumerate(ps):
                if not isinstance(p, str) or not p.strip():
                    raise ScoringInputError(f"prompt {k + i} is empty")
                found = reserved_token_in(self.processor.tokenizer, p)
                if found:  # it would end the question early and be answered as someone else's markup
                    raise ScoringInputError(f"prompt {k + i} contains the reserved token {found!r}")
            texts = [self.processor.apply_chat_template(user_turn(self.question.format(prompt=p), image_first=True),
                                                        add_generation_prompt=True, tokenize=False) for p in ps]  # fmt: skip
            pil = [load_image(im, f"image {k + i}") for i, im in enumerate(ims)]
            # Left padding puts every row's next-token position last, so one logit row per image.
            batch = self.processor(text=texts, images=pil, return_tensors="pt", padding=True, padding_side="left")
            with torch.no_grad():
                logits = self.model(**batch.to(self.device), logits_to_keep=1, use_cache=False).logits[:, -1].float()
            yes = torch.logsumexp(logits[:, self.yes_ids.to(logits.device)], -1)
            no = torch.logsumexp(logits[:, self.no_ids.to(logits.device)], -1)
            out.append(torch.sigmoid(yes - no).cpu())
        mu = torch.cat(out).numpy() if out else np.zeros(0, np.float32)
        return ScoreResult(mu.astype(np.float32), np.zeros_like(mu, dtype=np.float32))


class OracleScorer(Scorer):
    """The SpatialWorld rule-based judge (`spatial.world.check`).

    Score = the fraction of the prompt's relations judged true in the image (not 1/0 for
    "all satisfied"): a dense reward that still ranks a fully satisfied image highest, and
    which GRPO can climb one relation at a time. Prompts outside the SpatialWorld vocabulary
    raise `spatial.world.PromptError`.
    """

    name = "oracle"

    def score(self, prompts, images) -> ScoreResult:
        from spatial.reward.data import load_image
        from spatial.reward.model import ScoringInputError
        from spatial.world import check

        prompts, images = list(prompts), list(images)
        if len(prompts) != len(images):
            raise ScoringInputError(f"got {len(prompts)} prompts but {len(images)} images")
        mu = []
        for i, (p, im) in enumerate(zip(prompts, images)):
            rels = check(load_image(im, f"image {i}"), p).relations
            mu.append(sum(r["verdict"] == "true" for r in rels) / max(1, len(rels)))
        mu = np.asarray(mu, dtype=np.float32)
        return ScoreResult(mu, np.zeros_like(mu))


def load_scorer(name_or_path: str | Path, device=None, dtype=None, **kwargs) -> Scorer:
    """`oracle`, `spatialscore` (the toy checkpoint), `judge` (the toy instruct backbone),
    `judge:<folder or Hub id>`, a SpatialScore checkpoint folder, or a Qwen2.5-VL folder / Hub id
    (loaded as a zero-shot judge)."""
    key = str(name_or_path)
    if key == "oracle":
        return OracleScorer()
    if key == "spatialscore":
        return SpatialScoreScorer(TOY_SPATIALSCORE, device=device, dtype=dtype, **kwargs)
    if key == "judge":
        return ZeroShotJudge(TOY_VLM, device=device, dtype=dtype, **kwargs)
    if key.startswith("judge:"):
        return ZeroShotJudge(key[len("judge:") :], device=device, dtype=dtype, **kwargs)
    check_scorer_name(key)
    path = Path(key)
    if (path / "spatialscore_config.json").is_file():
        return SpatialScoreScorer(path, device=device, dtype=dtype, **kwargs)
    return ZeroShotJudge(key, device=device, dtype=dtype, **kwargs)


def check_scorer_name(key: str) -> None:
    """Refuse, without loading anything, a name `load_scorer` could never resolve (FileNotFoundError)."""
    if key in ("oracle", "spatialscore", "judge") or key.startswith("judge:"):
        return
    path = Path(key)
    if (path / "spatialscore_config.json").is_file():
        return
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{key} is neither a SpatialScore checkpoint nor a Qwen2.5-VL folder")
    if not path.exists() and (key.startswith((".", "/")) or key.count("/") != 1):
        raise FileNotFoundError(f"no scorer {key!r}: use oracle, spatialscore, judge, judge:<model>, or a path")
