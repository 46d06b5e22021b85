"""Video frames as inputs, by id: a kept frame's input id is ``<video id>.t<ms, 10 digits>``,
derived from its video and timestamp (a re-run of an upload rewrites the same ids), so any
service can tell a frame's video and time from its id alone (search hits, group-aware splits,
labeling batches) without a lookup. Pure: regular expressions only."""

from __future__ import annotations

import re

from firstlight.errors import InvalidArgument

#: Video ids leave room in the 128-character input id for the frame suffix (".t" + 10 digits).
VIDEO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", re.ASCII)
_FRAME_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,99})\.t([0-9]{10})", re.ASCII)


def video_id(value: str) -> str:
    if not isinstance(value, str) or not VIDEO_ID.fullmatch(value):
        raise InvalidArgument(f"video id {str(value)[:80]!r} is invalid: use 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit")
    return value


def frame_input_id(vid: str, t: float) -> str:
    """``<video id>.t<milliseconds, 10 digits>``: sorts in time order, the same on every run."""
    return f"{vid}.t{round(t * 1000):010d}"


def parse_frame_input_id(input_id: str) -> tuple[str, float] | None:
    """(video id, seconds) of a frame's input id; None for any other input."""
    m = _FRAME_ID.fullmatch(input_id)
    return (m.group(1), int(m.group(2)) / 1000) if m else None


def video_groups(input_ids: list[str]) -> list[str | None]:
    """Each input's video (None for an image): the groups of a group-aware split."""
    out: list[str | None] = []
    for input_id in input_ids:
        parsed = parse_frame_input_id(input_id)
        out.append(parsed[0] if parsed else None)
    return out
