"""Merging video groups with duplicate groups (domain.group_split.merge_groups), and the
group-aware split over the merged groups: no group crosses splits. Pure, no I/O."""

from __future__ import annotations

import pytest

from firstlight.domain.group_split import group_split, merge_groups
from firstlight.errors import InvalidArgument


def _components(groups: list[str | None]) -> list[set[int]]:
    by: dict[str, set[int]] = {}
    for i, g in enumerate(groups):
        if g is not None:
            by.setdefault(g, set()).add(i)
    return sorted(by.values(), key=min)


def test_duplicates_join_videos_and_each_other_transitively() -> None:
    # inputs 0-2: frames of video "a"; 3-4: video "b"; 5-9: images
    videos: list[str | None] = ["a", "a", "a", "b", "b", None, None, None, None, None]
    # 5~6 and 6~7 chain into one group; 8 is a copy of a frame of "b"; 9 is alone
    merged = merge_groups(videos, [[5, 6], [6, 7], [8, 3]])
    assert _components(merged) == [{0, 1, 2}, {3, 4, 8}, {5, 6, 7}]
    assert merged[9] is None and merged[0] == "a" and merged[3] == "b"  # untouched videos keep their name
    # a duplicate across two videos makes them one group
    assert _components(merge_groups(videos, [[1, 4]])) == [{0, 1, 2, 3, 4}]
    # nothing linked: the video groups as they were
    assert merge_groups(videos, []) == videos


def test_merged_names_cannot_collide_with_video_ids() -> None:
    merged = merge_groups([None, None, "x", None], [[0, 1], [3, 3]])
    assert merged[0] == merged[1] == "#0" and merged[2] == "x" and merged[3] is None


def test_a_linked_index_outside_the_inputs_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="outside"):
        merge_groups([None, None], [[0, 2]])


@pytest.mark.parametrize("seed", range(5))
def test_the_split_over_merged_groups_keeps_every_group_whole(seed: int) -> None:
    n = 120
    videos: list[str | None] = [f"v{i // 6}" if i < 36 else None for i in range(n)]  # 6 videos x 6 frames
    labels = [f"c{i % 3}" for i in range(n)]
    dups = [[36 + 2 * k, 37 + 2 * k] for k in range(20)] + [[100, 5], [101, 102], [102, 103], [103, 11]]
    merged = merge_groups(videos, dups)
    out = group_split(labels, merged, fractions=(0.6, 0.2, 0.2), seed=seed)
    split_of = {i: name for name, idx in out.splits.items() for i in idx}
    for members in _components(merged):
        assert len({split_of[i] for i in members}) == 1, members
    assert all(out.achieved[s] > 0 for s in ("train", "validation", "test"))
