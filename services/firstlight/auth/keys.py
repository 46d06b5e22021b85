"""Moved: key format, digests, principals and the RPC policy are ``firstlight.domain.keys``
(shared by this service and every service's interceptor); what a request names is
``firstlight.runtime.scope``."""

from firstlight.domain.keys import *  # noqa: F403  # shim: removed after the branches merge
from firstlight.runtime.scope import APP_ID_FIELDS, RequestScope, default_app, request_scope  # noqa: F401  # shim: removed after the branches merge
