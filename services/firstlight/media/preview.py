"""The decoded pixels ingestion hands to embedding, so an upload is decoded once.

Ingestion has to decode an upload to validate it (a truncated or corrupt JPEG must be refused
with INVALID_ARGUMENT, not discovered later by a consumer). For a large JPEG that decode is
the reduced one the model needs (firstlight.media.decode), and it is stored beside the
original as a *preview*: the upright sRGB RGB pixels, uncompressed (``.npy``: no re-encoding
loss, nothing to decode; 0.57 MB for a 12 MP photo at 1/8 scale). The ``inputs.ingested``
event names it (``preview_uri``); the embedding worker makes the model input from it when it
covers the size its model needs, and decodes the original otherwise (older events have no
preview; apps whose model takes larger inputs).

Small images get no preview: decoding them again costs less than storing and reading one.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from firstlight.errors import InvalidArgument
from firstlight.media.decode import Photo, model_decode_side

#: The side ingestion decodes for: the backbone's (224 px input, 256 px before the crop).
#: Ingestion does not import the backbone (torch); a unit test keeps the two equal.
BACKBONE_INPUT = 224
PREVIEW_SIDE = model_decode_side(BACKBONE_INPUT)

#: Largest preview side accepted back (a 16,384-px photo at 1/2 scale is 8,192).
_MAX_SIDE = 8192


def wants_preview(photo: Photo) -> bool:
    """Only reduced decodes are worth keeping: they stand for a large, costly original."""
    return photo.reduction > 1


def encode_preview(photo: Photo) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(photo.image, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def decode_preview(data: bytes) -> Image.Image:
    """The RGB image of a stored preview; InvalidArgument when it is not one."""
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidArgument(f"stored preview is unreadable: {exc}") from None
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or not (0 < a.shape[0] <= _MAX_SIDE and 0 < a.shape[1] <= _MAX_SIDE):
        raise InvalidArgument(f"stored preview has shape {a.shape} {a.dtype}, not an RGB image")
    return Image.fromarray(a, "RGB")


def covers(image: Image.Image, image_size: int) -> bool:
    """Whether ``image`` has the resolution a model input of ``image_size`` is made from."""
    return min(image.size) >= model_decode_side(image_size)


def preview_name(input_id: str) -> str:
    """Blob name of an input's preview, beside its original in the app's blob folder. Input ids
    start with a letter or digit, so no input can be named like a preview."""
    return f".preview-{input_id}"


def preview_uri_of(blob_uri: str) -> str:
    """The preview's URI beside the original at ``blob_uri`` (named by its input id, as the blob
    store names the original), to delete it with the input."""
    folder, _, input_id = blob_uri.rpartition("/")
    return f"{folder}/{preview_name(input_id)}"
