"""Content-addressed image files: each image is stored once, as PNG, under the sha256 of its bytes.

Images are decoded in full before they are stored, so a truncated or corrupt file is refused at
import instead of failing in front of an annotator.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spatial.world.pairs import png_bytes

from .errors import SourceError

_HASH = re.compile(r"[0-9a-f]{64}")


def decode_image(image, max_side: int = 4096, what: str = "image") -> Image.Image:
    """A fully decoded RGB PIL image from a PIL image, numpy array, bytes or path; SourceError if
    it cannot be read."""
    try:
        if isinstance(image, Image.Image):
            img = image
        elif isinstance(image, np.ndarray):
            img = Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
        elif isinstance(image, (bytes, bytearray)):
            img = Image.open(io.BytesIO(image))
        elif isinstance(image, (str, os.PathLike)):
            if not Path(image).is_file():
                raise SourceError(f"{what}: no such file {str(image)!r}")
            img = Image.open(image)
        else:
            raise SourceError(f"{what}: expected an image, a path or bytes, got {type(image).__name__}")
        w, h = img.size  # from the header: a huge image is refused before it is decoded
        if min(w, h) < 1 or max(w, h) > max_side:
            raise SourceError(f"{what} is {w}x{h} pixels; sides must be between 1 and {max_side}")
        img.load()  # decodes every byte: truncated files fail here, not later
        img = img.convert("RGB")
    except SourceError:
        raise
    except Image.DecompressionBombError:  # larger than PIL will open at all
        raise SourceError(f"{what} is too large an image; sides must be at most {max_side} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, TypeError, SyntaxError) as e:
        raise SourceError(f"{what} is not a readable image ({e})") from None
    return img


class ImageStore:
    """PNG files named by the sha256 of their bytes, under `root/ab/abcd....png`."""

    def __init__(self, root: str | Path, fsync: bool = True, max_side: int = 4096):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.max_side = max_side

    def path(self, digest: str) -> Path:
        if not _HASH.fullmatch(digest):
            raise ValueError(f"not an image hash: {digest!r}")
        return self.root / digest[:2] / f"{digest}.png"

    def encode(self, image, what: str = "image") -> tuple[str, bytes]:
        """(sha256 hex, PNG bytes) of an image, without writing anything."""
        data = png_bytes(decode_image(image, self.max_side, what))
        return hashlib.sha256(data).hexdigest(), data

    def write(self, digest: str, data: bytes) -> Path:
        """Write PNG bytes under their hash once; durable on disk when this returns (fsync=True)."""
        path = self.path(digest)
        if path.exists():
            return path
        path.parent.mkdir(exist_ok=True)
        # Unique per writer: two threads of one process may store the same image at once.
        tmp = path.with_name(f".{digest}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.fsync:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename itself must survive a power cut
            finally:
                os.close(fd)
        return path

    def put(self, image, what: str = "image") -> str:
        digest, data = self.encode(image, what)
        self.write(digest, data)
        return digest

    def open(self, digest: str) -> Image.Image:
        with Image.open(self.path(digest)) as img:
            return img.convert("RGB")
