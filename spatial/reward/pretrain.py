"""Pretraining the toy Qwen2.5-VL on SpatialWorld ground truth: the toy world's "instruct" model.

A real SpatialScore starts from a VLM that already sees objects and where they are; a tiny model
trained from scratch on preference pairs alone stays at chance (docs/TRAINING.md). So the toy
backbone first learns from dense, exact supervision, with the language-model loss on the answer:

    where   "where is the red circle"                 -> "top left"            (3x3 grid words)
    list    "list the objects"                        -> "red circle top left ; blue square ..."
    yesno   "is the red circle to the left of the blue square" -> "yes" / "no" (clear cases only)
    judge   "Does this image follow the prompt: <prompt>? Answer yes or no." -> "yes" / "no"
            (chosen or rejected image of a SpatialWorld pair; the zero-shot judge's question)

Easy scenes (two objects, no distractors) come first, then the full world. The result is saved
like any Qwen2.5-VL-Instruct folder and is also the toy world's zero-shot judge.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from spatial.runlog import steps_up_to, trim_jsonl
from spatial.world import COLOURS, SHAPES, Scene, WorldConfig, example_seed, render, sample_example, sample_pair
from spatial.world.scene import CLEAR, CLEARLY_NOT, direction_cosine
from spatial.world.vocab import PHRASES

from .config import JUDGE_QUESTION
from .processing import user_turn
from .toy import ToyVLMConfig, build_toy_backbone, object_names

ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
TASKS = ("where", "list", "yesno", "judge")
OBJECT_NAMES = object_names()
RELATION_MARGIN = 0.08  # centre offsets within this (image fractions) count as "neither side"


@dataclass
class PretrainVLMConfig:
    """Pretraining of the toy Qwen2.5-VL backbone on SpatialWorld (dense supervision, easy to hard)."""

    out: str = "assets/toy/vlm"
    """Folder the pretrained backbone and processor are saved to (Qwen2.5-VL layout)."""
    seed: int = 0
    """Seed of the initial weights and the task sampler."""
    world_seed: int = 1000
    """SpatialWorld seed of the training scenes (keep apart from reward and evaluation seeds)."""
    steps: int = 8000
    """Optimiser steps (about 25 minutes on 2 CPU cores)."""
    batch_size: int = 16
    """Questions per step."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay)."""
    warmup: int = 100
    """Warm-up steps."""
    easy_fraction: float = 0.3
    """Fraction of the steps that use only easy scenes (two objects, no distractors)."""
    pool: int = 8000
    """Scenes rendered up front (each question draws one)."""
    pairs: int = 4000
    """SpatialWorld preference pairs rendered up front for the judge task."""
    mix: str = "where:2,yesno:3,judge:3"
    """Task weights, `task:weight` separated by commas (tasks: where, list, yesno, judge)."""
    grounding_weight: float = 1.0
    """Weight of the dense grounding probes (image-token cell and content, object-mention cell); 0 turns them off."""
    grounding_image_layer: int = 1
    """Layer whose image-token states the image probe reads (1 = after the first layer)."""
    grounding_text_layer: int = 2
    """Layer whose object-mention states the mention probe reads."""
    grounding_relation_layer: int = 3
    """Layer whose clause states the relation probe reads."""
    eval_every: int = 1000
    """Steps between held-out evaluations (and resumable checkpoints)."""
    eval_size: int = 128
    """Held-out questions per task at each evaluation."""
    model: str = ""
    """ToyVLMConfig fields to change, as a JSON object (e.g. '{"layers": 6}'); empty: the defaults."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu` or `cuda`."""

    def validate(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("steps and batch_size must be positive")
        if not 0.0 <= self.easy_fraction <= 1.0:
            raise ValueError("easy_fraction must be in [0, 1]")
        parse_mix(self.mix)
        self.toy_config()

    def toy_config(self) -> ToyVLMConfig:
        if not self.model.strip():
            return ToyVLMConfig()
        try:
            fields = json.loads(self.model)
            return ToyVLMConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise ValueError(f"model must be a JSON object of ToyVLMConfig fields ({e})") from None

    def task_weights(self) -> dict[str, float]:
        return parse_mix(self.mix)


def parse_mix(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, w = part.partition(":")
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r} in mix; tasks: {', '.join(TASKS)}")
        try:
            out[name] = float(w or 1)
        except ValueError:
            raise ValueError(f"task weight {w!r} is not a number") from None
    if not out or sum(out.values()) <= 0:
        raise ValueError("mix needs at least one task with a positive weight")
    return out


def grid_words(x: float, y: float) -> str:
    return f"{ROWS[min(int(y * 3), 2)]} {COLS[min(int(x * 3), 2)]}"


EASY = WorldConfig(max_objects=2, max_relations=1, distractor_prob=0.0)


@dataclass(frozen=True)
class Question:
    text: str
    image: object  # PIL image
    answer: str
    scene: Scene
    clauses: bool = False
    """The text names objects two by two as '<A> <relation> <B>' clauses (relation probe applies)."""


class QuestionSampler:
    """Pre-rendered scenes and pairs, turned into questions with exact answers on demand."""

    def __init__(self, world_seed: int, n_scenes: int, n_pairs: int, size: int, progress: bool = True):
        n_easy = max(1, n_scenes // 4)
        bar = tqdm(total=n_scenes + n_easy + n_pairs, desc="render", disable=not progress)
        n_easy_pairs = max(1, n_pairs // 4)
        bar.total += n_easy_pairs
        self.scenes, self.easy, self.pairs, self.easy_pairs = [], [], [], []
        for i in range(n_scenes):
            ex = sample_example(example_seed(world_seed, i))
            self.scenes.append((ex.scene, render(ex.scene, size)))
            bar.update()
        for i in range(n_easy):
            ex = sample_example(example_seed(world_seed + 1, i), EASY)
            self.easy.append((ex.scene, render(ex.scene, size)))
            bar.update()
        for i in range(n_pairs):
            p = sample_pair(example_seed(world_seed + 2, i))
            w, l = p.example.scene, p.perturbation.scene
            self.pairs.append((p.prompt, (w, render(w, size)), (l, render(l, size))))
            bar.update()
        for i in range(n_easy_pairs):
            p = sample_pair(example_seed(world_seed + 3, i), EASY)
            w, l = p.example.scene, p.perturbation.scene
            self.easy_pairs.append((p.prompt, (w, render(w, size)), (l, render(l, size))))
            bar.update()
        bar.close()

    def sample(self, task: str, rng: random.Random, easy: bool) -> Question:
        if task == "judge":
            prompt, chosen, rejected = rng.choice(self.easy_pairs if easy else self.pairs)
            good = rng.random() < 0.5
            scene, img = chosen if good else rejected
            return Question(JUDGE_QUESTION.format(prompt=prompt), img, "yes" if good else "no", scene, clauses=True)
        scene, img = rng.choice(self.easy if easy else self.scenes)
        objs = list(scene.objects)
        if task == "where":
            o = rng.choice(objs)
            return Question(f"where is the {o.name}", img, grid_words(o.x, o.y), scene)
        if task == "list":
            order = sorted(objs, key=lambda o: (min(int(o.y * 3), 2), o.x))
            return Question("list the objects", img, " ; ".join(f"{o.name} {grid_words(o.x, o.y)}" for o in order), scene)
        if task == "yesno":
            want_yes = rng.random() < 0.5
            for _ in range(50):
                a, b = rng.sample(objs, 2)
                pred = rng.choice(list(PHRASES))
                c = direction_cosine(a.box, b.box, pred)
                if (want_yes and c >= CLEAR) or (not want_yes and c <= CLEARLY_NOT):
                    text = f"is the {a.name} {rng.choice(PHRASES[pred])} the {b.name}"
                    return Question(text, img, "yes" if want_yes else "no", scene, clauses=True)
            return self.sample("where", rng, easy)
        raise ValueError(f"unknown task {task!r}")


class GroundingHeads(nn.Module):
    """Linear probes used only during pretraining (dense grounding supervision), then discarded.

    On every image token: its own row and column in the token grid and the object covering it
    (or background). On every object mention in the text: the row and column of that object in
    the image. On the second mention of each '<A> <relation> <B>' clause: where A lies from B,
    per axis (clearly before / neither / clearly after), which is what relations are made of.
    """

    def __init__(self, hidden: int, grid: int):
        super().__init__()
        self.grid = grid
        self.image = nn.Linear(hidden, 2 * grid + len(OBJECT_NAMES) + 1)
        self.text = nn.Linear(hidden, 2 * grid)
        self.relation = nn.Linear(hidden, 6)

    @staticmethod
    def side(d: float) -> int:
        return 0 if d < -RELATION_MARGIN else (2 if d > RELATION_MARGIN else 1)

    def cell(self, x: float, y: float) -> tuple[int, int]:
        g = self.grid
        return min(int(y * g), g - 1), min(int(x * g), g - 1)

    def loss(self, hidden_image, hidden_text, hidden_relation, batch, questions, processor) -> tuple[torch.Tensor, dict]:
        g = self.grid
        ce = nn.functional.cross_entropy
        ids = batch["input_ids"]
        img_tok = processor.image_token_id
        # Image tokens, in order: row-major over each image's grid.
        targets = []
        for q in questions:
            for i in range(g):
                for j in range(g):
                    cx, cy = (j + 0.5) / g, (i + 0.5) / g
                    hit = len(OBJECT_NAMES)
                    for o in q.scene.objects:  # later objects are drawn on top
                        x0, y0, x1, y1 = o.box
                        if x0 <= cx <= x1 and y0 <= cy <= y1:
                            hit = OBJECT_NAMES.index(o.name)
                    targets.append((i, j, hit))
        t = torch.tensor(targets, device=ids.device)
        logits = self.image(hidden_image[ids == img_tok].float())
        loss_img = ce(logits[:, :g], t[:, 0]) + ce(logits[:, g : 2 * g], t[:, 1]) + ce(logits[:, 2 * g :], t[:, 2])
        # Object mentions: the shape word right after a colour word.
        tok = processor.tokenizer
        colours = {tok.convert_tokens_to_ids(c): c for c in COLOURS}
        shapes = {tok.convert_tokens_to_ids(s): s for s in SHAPES}
        whole = {tok.convert_tokens_to_ids(n): n for n in OBJECT_NAMES if n in tok.get_vocab()}
        rows, pos, rel_rows, rel = [], [], [], []
        for b, q in enumerate(questions):
            by_name = {o.name: o for o in q.scene.objects}
            seq = ids[b].tolist()
            mentions = []
            for k in range(1, len(seq)):
                name = whole.get(seq[k])
                if name is None and seq[k] in shapes and seq[k - 1] in colours:
                    name = f"{colours[seq[k - 1]]} {shapes[seq[k]]}"
                if name in by_name:
                    rows.append((b, k))
                    pos.append(self.cell(by_name[name].x, by_name[name].y))
                    mentions.append((k, by_name[name]))
            if q.clauses:
                for (_, a), (k, o) in zip(mentions[0::2], mentions[1::2]):
                    rel_rows.append((b, k))
                    rel.append((self.side(a.x - o.x), self.side(a.y - o.y)))
        stats = {"aux_cell": (logits[:, :g].argmax(1) == t[:, 0]).float().mean().item(),
                 "aux_content": (logits[:, 2 * g :].argmax(1) == t[:, 2]).float().mean().item()}  # fmt: skip
        if not rows:
            return loss_img, stats
        r = torch.tensor(rows, device=ids.device)
        p = torch.tensor(pos, device=ids.device)
        lt = self.text(hidden_text[r[:, 0], r[:, 1]].float())
        loss_txt = ce(lt[:, :g], p[:, 0]) + ce(lt[:, g:], p[:, 1])
        stats["aux_mention"] = ((lt[:, :g].argmax(1) == p[:, 0]) & (lt[:, g:].argmax(1) == p[:, 1])).float().mean().item()
        if not rel_rows:
            return loss_img + loss_txt, stats
        r = torch.tensor(rel_rows, device=ids.device)
        y = torch.tensor(rel, device=ids.device)
        lr = self.relation(hidden_relation[r[:, 0], r[:, 1]].float())
        loss_rel = ce(lr[:, :3], y[:, 0]) + ce(lr[:, 3:], y[:, 1])
        stats["aux_relation"] = ((lr[:, :3].argmax(1) == y[:, 0]) & (lr[:, 3:].argmax(1) == y[:, 1])).float().mean().item()
        return loss_img + loss_txt + loss_rel, stats


def encode(processor, questions: list[Question], device, image_first: bool = True) -> dict:
    """Chat-format batch; labels cover the answer and the closing <|im_end|> only."""
    prompts = [processor.apply_chat_template(user_turn(q.text, image_first), add_generation_prompt=True, tokenize=False)
               for q in questions]  # fmt: skip
    texts = [p + q.answer + "<|im_end|>" for p, q in zip(prompts, questions)]
    batch = processor(text=texts, images=[q.image for q in questions], return_tensors="pt", padding=True,
                      padding_side="right")  # fmt: skip
    labels = torch.full_like(batch["input_ids"], -100)
    lengths = batch["attention_mask"].sum(1).tolist()
    for i, q in enumerate(questions):
        n = len(processor.tokenizer(q.answer + "<|im_end|>", add_special_tokens=False)["input_ids"])
        labels[i, lengths[i] - n : lengths[i]] = batch["input_ids"][i, lengths[i] - n : lengths[i]]
    batch["labels"] = labels
    return {k: v.to(device) for k, v in batch.items()}


def answer_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: 1 when every answer token is predicted exactly (greedy, teacher-forced)."""
    pred = logits[:, :-1].argmax(-1)
    tgt = labels[:, 1:]
    mask = tgt != -100
    return ((pred == tgt) | ~mask).all(dim=1).float()


class VLMPretrainer:
    def __init__(self, config: PretrainVLMConfig, progress: bool = True):
        config.validate()
        self.config, self.toy, self.progress = config, config.toy_config(), progress
        if config.threads:
            torch.set_num_threads(config.threads)
        dev = config.device
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else ("cpu" if dev == "auto" else dev))
        self.out = Path(config.out)

    def run(self) -> Path:
        c = self.config
        t0 = time.perf_counter()
        model, processor = build_toy_backbone(self.toy, seed=c.seed)
        grid = self.toy.image_size // (self.toy.patch_size * self.toy.merge_size)
        heads = GroundingHeads(self.toy.hidden, grid)
        model.to(self.device)
        heads.to(self.device)
        params = list(model.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, c.warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / c.steps))))
        ckpt = self.out / "checkpoint.pt"
        start = 0
        if ckpt.exists():
            state = torch.load(ckpt, map_location=self.device, weights_only=False)
            model.load_state_dict(state["model"])
            heads.load_state_dict(state["heads"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = state["step"]
        sampler = QuestionSampler(c.world_seed, c.pool, c.pairs, self.toy.image_size, self.progress)
        held_out = QuestionSampler(c.world_seed + 7, 600, 600, self.toy.image_size, progress=False)
        weights = c.task_weights()
        names, w = list(weights), list(weights.values())
        self.out.mkdir(parents=True, exist_ok=True)
        trim_jsonl(self.out / "metrics.jsonl", steps_up_to(start))  # a resumed run redoes the steps after `start`
        metrics = open(self.out / "metrics.jsonl", "a")
        bar = tqdm(range(start, c.steps), desc="pretrain toy VLM", disable=not self.progress, initial=start, total=c.steps)
        model.train()
        for step in bar:
            rng = random.Random(f"pretrain:{c.seed}:{step}")
            easy = step < c.easy_fraction * c.steps
            questions = [sampler.sample(rng.choices(names, w)[0], rng, easy) for _ in range(c.batch_size)]
            batch = encode(processor, questions, self.device)
            out = model(**batch, output_hidden_states=c.grounding_weight > 0)
            loss, aux = out.loss, {}
            if c.grounding_weight > 0:
                hs = out.hidden_states
                g_loss, aux = heads.loss(hs[c.grounding_image_layer], hs[c.grounding_text_layer],
                                         hs[c.grounding_relation_layer], batch, questions, processor)  # fmt: skip
                loss = loss + c.grounding_weight * g_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            row = {"step": step + 1, "loss": round(out.loss.item(), 5), "lr": sched.get_last_lr()[0],
                   "elapsed_s": round(time.perf_counter() - t0, 1), **{k: round(v, 4) for k, v in aux.items()}}  # fmt: skip
            if (step + 1) % c.eval_every == 0 or step + 1 == c.steps:
                row.update(self.evaluate(model, processor, held_out, names))
                model.train()
                torch.save({"model": model.state_dict(), "heads": heads.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "step": step + 1}, ckpt)  # fmt: skip
                print(json.dumps(row), flush=True)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        metrics.close()
        model.eval()
        model.save_pretrained(self.out)
        processor.save_pretrained(self.out)
        (self.out / "pretrain_config.json").write_text(json.dumps({"pretrain": asdict(c), "toy": asdict(self.toy)}, indent=1))
        ckpt.unlink(missing_ok=True)
        return self.out

    @torch.no_grad()
    def evaluate(self, model, processor, sampler: QuestionSampler, names) -> dict:
        model.eval()
        out = {}
        for task in names:
            rng = random.Random(f"eval:{task}")
            accs = []
            for k in range(0, self.config.eval_size, 64):
                questions = [sampler.sample(task, rng, easy=False) for _ in range(min(64, self.config.eval_size - k))]
                batch = encode(processor, questions, self.device)
                accs.append(answer_accuracy(model(**batch).logits, batch["labels"]))
            out[f"eval_{task}_accuracy"] = round(torch.cat(accs).mean().item(), 4)
        return out
