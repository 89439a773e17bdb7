"""Spatial Studio's library: SpatialWorld, generation, SpatialScore, Spatial-RL, annotation and jobs."""

import logging


class _DropNote(logging.Filter):
    """Drops one known, harmless library warning that would otherwise fill every app and job log."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# diffusers imports CLIP's and SigLIP's image processors, which without torchvision (the CPU wheel
# does without it) fall back to their PIL versions: the versions this project uses.
logging.getLogger("transformers.utils.import_utils").addFilter(_DropNote("requires torchvision (not installed)"))
# Every RL LoRA here trains the transformer only, so each load finds no keys for the CLIP text encoder.
logging.getLogger("diffusers.loaders.lora_base").addFilter(_DropNote("No LoRA keys associated to CLIPTextModel"))
