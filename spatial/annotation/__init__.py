"""Human preference labels: a SQLite (WAL) store with an assignment queue, pair sources, export to a
dataset folder, Hub write-back and agreement statistics. No UI code here (see ui/annotate.py)."""

from .agreement import (
    AgreementReport, agreement_report, cohen_kappa, fleiss_kappa, krippendorff_alpha_nominal, majority,
    percent_agreement,
)
from .config import AnnotationConfig, ExportConfig, HubConfig
from .errors import (
    AlreadyLabelled, AnnotationError, InvalidInput, LeaseExpired, NotAssigned, SourceError, UnknownPair,
)
from .export import ExportSummary, export, resolve_pairs
from .sources import import_dataset, import_pair_folder, import_source, import_world
from .store import (
    LABELS, Ack, AnnotationStore, Assignment, ImportSummary, LabelRecord, PairInput, PairRecord, Progress,
)

__all__ = [
    "LABELS", "Ack", "AgreementReport", "AlreadyLabelled", "AnnotationConfig", "AnnotationError",
    "AnnotationStore", "Assignment", "ExportConfig", "ExportSummary", "HubConfig", "ImportSummary",
    "InvalidInput", "LabelRecord", "LeaseExpired", "NotAssigned", "PairInput", "PairRecord", "Progress",
    "SourceError", "UnknownPair", "agreement_report", "cohen_kappa", "export", "fleiss_kappa",
    "import_dataset", "import_pair_folder", "import_source", "import_world", "krippendorff_alpha_nominal",
    "majority", "percent_agreement", "resolve_pairs",
]  # fmt: skip
