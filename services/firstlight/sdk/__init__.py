"""Python SDK: one client object over the services' gRPC APIs.

    from firstlight.sdk import Firstlight
    with Firstlight.from_stack() as fl:
        fl.create_app("pets", exist_ok=True)
        fl.upload_folder("pets", "photos/")          # class sub-folders become concepts
        fl.wait_indexed("pets", timeout=120)
        hits = fl.search_by_text("pets", "elephant")

Every call carries an API key (``authorization: Bearer <key>``): ``api_key=``, else the
FIRSTLIGHT_API_KEY environment variable, else (``from_stack``) the local stack's admin key.
``tls_root_cert=`` (PEM bytes or a file) makes the client use TLS.

A failed call raises a :mod:`firstlight.errors` type (``NotFound``, ``InvalidArgument``…, all
:class:`FirstlightError`) with the gRPC ``code``, the service's ``message`` and the text
``"<CODE>: <message>"``. The calls of each service live in a module of their own
(``auth``, ``ingestion``, ``search``, ``embedding``, ``inference``, ``training``, ``curation``,
``video``: upload a video, label a segment, predict with time segments, search by a clip);
``projection`` draws the client-side embedding map; ``quality`` has the filter on the stored
image-quality metrics (``list_inputs(app, quality="blur<=0.2")``) and a histogram plot.
"""

from firstlight.sdk.client import Client, Firstlight
from firstlight.sdk.errors import FirstlightError, error_for
from firstlight.sdk.items import (
    IMAGE_SUFFIXES,
    SPLITS,
    DetectedRegion,
    ReembedReport,
    UploadItem,
    UploadReport,
    folder_items,
    id_for_path,
    region_protos,
)
from firstlight.sdk.quality import QualityFilter
from firstlight.sdk.transport import RATE_LIMIT_ATTEMPTS, RATE_LIMIT_MAX_WAIT_S, honour_rate_limit, retry_after_s

__all__ = [
    "IMAGE_SUFFIXES",
    "RATE_LIMIT_ATTEMPTS",
    "RATE_LIMIT_MAX_WAIT_S",
    "SPLITS",
    "Client",
    "DetectedRegion",
    "Firstlight",
    "FirstlightError",
    "QualityFilter",
    "ReembedReport",
    "UploadItem",
    "UploadReport",
    "error_for",
    "folder_items",
    "honour_rate_limit",
    "id_for_path",
    "region_protos",
    "retry_after_s",
]
