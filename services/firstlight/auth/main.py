"""The auth part of a process: the AuthService, the resolver of the process's own interceptor
and the ``inputs.submit`` gate, wired to the key table in ``engine``.

Auth is hosted by the ingestion process (``ingestion.main`` calls :func:`build`); it has no
process of its own. The key table lives in the ingestion store beside the apps a key must
belong to, the gate runs where ``inputs.submit`` is consumed, and the other services' lookups
(``ResolveApiKey``) are cached by their interceptors; a separate process would add ~150 MB and
a start-up step for one indexed SELECT. Everything here takes its store and its app directory
as ports, so a process of its own would be a ``ServiceShell`` around this same function."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from sqlalchemy.engine import Engine

from firstlight.auth import servicer as auth_servicer
from firstlight.auth.core import ApiKeys, SubmissionGate
from firstlight.auth.ports import AppDirectory
from firstlight.auth.store import ApiKeyStore
from firstlight.config import SecuritySettings
from firstlight.hosting.auth import Authenticator, make_authenticator


@dataclass
class AuthParts:
    keys: ApiKeys
    #: The interceptor's authenticator of the hosting process (None: authentication is off).
    authenticator: Authenticator | None
    #: Checks the key of each ``inputs.submit`` record (None: authentication is off).
    gate: SubmissionGate | None

    def register(self, server: grpc.aio.Server) -> list[str]:
        return auth_servicer.add_to_server(auth_servicer.AuthServicer(self.keys), server)


def build(engine: Engine, settings: SecuritySettings, check_app: AppDirectory) -> AuthParts:
    store = ApiKeyStore(engine)
    keys = ApiKeys(store, check_app)
    if not settings.auth_required:
        return AuthParts(keys, None, None)
    # This process resolves app keys from its own table; the others ask it (ResolveApiKey).
    authenticator = make_authenticator(settings, keys.principal)
    keys.on_revoked = authenticator.forget  # a revoked key stops working here at once
    gate = SubmissionGate(settings.admin_key.get_secret_value(), settings.internal_key.get_secret_value(), store)
    return AuthParts(keys, authenticator, gate)
