"""What the annotation store refuses. Every message is fit to show to the person who asked, and a
refused request changes nothing."""

from __future__ import annotations


class AnnotationError(Exception):
    """Base class: a request the annotation store refuses."""


class InvalidInput(AnnotationError, ValueError):
    """A malformed argument: an unknown label, an empty annotator id, a note that is too long."""


class UnknownPair(AnnotationError, KeyError):
    """No pair has this id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class NotAssigned(AnnotationError):
    """The pair exists but was never shown to this annotator."""


class AlreadyLabelled(AnnotationError):
    """The annotator already labelled this pair under another submission id."""


class LeaseExpired(AnnotationError):
    """The annotator's time on the pair ran out and the pair went to someone else."""


class SourceError(AnnotationError):
    """A pair source cannot be imported: missing columns, a corrupt or missing image, a bad path."""
