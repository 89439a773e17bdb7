"""Spatial Studio's library: SpatialWorld, generation, SpatialScore, Spatial-RL, annotation and jobs."""

import logging


class _NoTorchvisionFallbackNote(logging.Filter):
    # diffusers imports CLIP's and SigLIP's image processors, which without torchvision (not needed
    # here: the CPU wheel ships without it) fall back to their PIL versions with a warning in every
    # app and job log. The fallback is what this project uses; the warning only adds noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionFallbackNote())
