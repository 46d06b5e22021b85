"""A dataset over video frames keeps each video in one split; when a concept is on too few
videos to reach train and validation, the refusal says so (not only "no input in validation",
which puzzles a user who labeled 11 frames of it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from training_doubles import DarkLightPeers, training_core

from firstlight.errors import FailedPrecondition


class FramePeers(DarkLightPeers):
    """Frames of two videos of "street" and of one video of "tree" (ids as ingestion names them)."""

    def labeled_inputs(self, app_id: str, concepts: object) -> list[tuple[str, list[str], list[Any]]]:
        frames = [(f"walk{v}.t{t:010d}", ["street"], []) for v in (1, 2) for t in range(0, 6000, 1000)]
        return frames + [(f"tree.t{t:010d}", ["tree"], []) for t in range(0, 6000, 1000)]


def test_a_concept_on_one_video_is_refused_with_the_reason(tmp_path: Path) -> None:
    core = training_core(tmp_path, FramePeers())  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition, match=r"'tree'.*Frames of one video stay in one split.*'tree' is on 1 video\(s\) and 0 other"):
        core.create_dataset("a", "frames", fractions=(0.5, 0.5, 0.0))
