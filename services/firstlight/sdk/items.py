"""What the SDK sends and gets back besides protobufs: upload items and reports, box labels,
detected regions, and the folder convention (class sub-folders become concepts)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firstlight.domain.validation import INPUT_ID
from firstlight.v1 import common_pb2, ingestion_pb2

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif"}
#: Split names and their proto values (common.Split: 0 unspecified, 1 train, 2 validation, 3 test).
SPLITS: dict[str, common_pb2.Split.ValueType] = {
    "": common_pb2.SPLIT_UNSPECIFIED,
    "train": common_pb2.SPLIT_TRAIN,
    "validation": common_pb2.SPLIT_VALIDATION,
    "test": common_pb2.SPLIT_TEST,
}


@dataclass(frozen=True)
class DetectedRegion:
    """One object a detector model found: concept, score, box (x0, y0, x1, y1) in [0, 1] of the image."""

    concept: str
    score: float
    box: tuple[float, float, float, float]


def region_protos(regions: Iterable[Any]) -> list[common_pb2.Region]:
    """Box labels as common.Region. Each region is ``(concept, (x0, y0, x1, y1))``,
    ``(concept, x0, y0, x1, y1)``, ``{"concept": ..., "box": [x0, y0, x1, y1]}``, or an object with ``concept`` and either ``box`` (a
    :class:`DetectedRegion`, a common.Region) or ``x0..y1`` (the detector's ``Box``). Boxes are
    normalised to the image; the server validates them (INVALID_ARGUMENT naming the field)."""
    out = []
    for r in regions:
        if isinstance(r, common_pb2.Region):
            out.append(r)
            continue
        if isinstance(r, dict):  # JSON: {"concept": ..., "box": [x0, y0, x1, y1]}
            concept, box = r["concept"], r["box"]
        elif hasattr(r, "concept"):
            concept = r.concept
            box = getattr(r, "box", None)
            if box is None:
                box = (r.x0, r.y0, r.x1, r.y1)
            elif isinstance(box, common_pb2.BoundingBox):
                box = (box.x0, box.y0, box.x1, box.y1)
        else:
            concept, *rest = r
            box = rest[0] if len(rest) == 1 else rest
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append(common_pb2.Region(concept=concept, box=common_pb2.BoundingBox(x0=x0, y0=y0, x1=x1, y1=y1)))
    return out


@dataclass
class UploadItem:
    image_bytes: bytes
    concepts: list[str] = field(default_factory=list)
    id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    split: str = ""
    #: Box labels (see :func:`region_protos` for the accepted forms); their concepts are added.
    regions: list[Any] = field(default_factory=list)


@dataclass
class UploadReport:
    input_ids: list[str] = field(default_factory=list)
    failures: list[ingestion_pb2.InputFailure] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ReembedReport:
    """What :meth:`~firstlight.sdk.ingestion.IngestionCalls.reembed` re-announced."""

    queued_ids: list[str] = field(default_factory=list)
    scanned: int = 0
    total: int = 0  # inputs the selection covered: the listed ids, or the app's inputs
    unreadable_ids: list[str] = field(default_factory=list)  # rotated scan: originals not readable
    seconds: float = 0.0

    @property
    def queued(self) -> int:
        return len(self.queued_ids)


def id_for_path(rel: Path) -> str:
    """A stable input id from a file's path, so uploading a folder twice adds nothing twice."""
    candidate = re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(rel.parts))
    if INPUT_ID.fullmatch(candidate) and candidate == "_".join(rel.parts).replace(" ", "_"):
        return candidate
    return "f-" + hashlib.sha256(str(rel).encode()).hexdigest()[:24]


def folder_items(folder: Path) -> list[UploadItem]:
    """Images under ``folder``; a file in ``folder/<name>/`` is labeled with concept <name>.
    Input ids derive from the relative path (``cat/001.jpg`` → ``cat_001.jpg``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory")
    items = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            rel = path.relative_to(folder)
            concepts = [rel.parts[0]] if len(rel.parts) > 1 else []
            items.append(UploadItem(path.read_bytes(), concepts, id=id_for_path(rel), metadata={"filename": str(rel)}))
    return items
