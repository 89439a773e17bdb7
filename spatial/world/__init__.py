"""SpatialWorld: procedural spatial prompts, scenes, renders, perturbations and an exact oracle."""

from .grammar import PromptError, format_prompt, parse_prompt, unknown_words
from .oracle import CheckResult, check, find_blobs
from .pairs import PAIR_COLUMNS, Pair, sample_pair, write_pairs
from .perturb import KINDS, Perturbation, perturb
from .render import render
from .sampler import Example, WorldConfig, example_seed, sample_example, sample_prompts, spec_holds, weight_by_object_count
from .scene import PromptSpec, Relation, Scene, SceneObject, direction_cosine, relation_holds
from .vocab import COLOURS, RELATIONS, SHAPES, words

__all__ = [
    "COLOURS", "RELATIONS", "SHAPES", "CheckResult", "Example", "KINDS", "PAIR_COLUMNS", "Pair",
    "Perturbation", "PromptError", "PromptSpec", "Relation", "Scene", "SceneObject", "WorldConfig",
    "check", "direction_cosine", "example_seed", "find_blobs", "format_prompt", "parse_prompt",
    "perturb", "relation_holds", "render", "sample_example", "sample_pair", "sample_prompts",
    "spec_holds", "unknown_words", "weight_by_object_count", "words", "write_pairs",
]  # fmt: skip
