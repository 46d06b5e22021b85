"""gRPC server shell shared by every service: health + reflection, error mapping (applied by
the servicers), authentication and per-key limits (``runtime.auth``), TLS by configuration,
message-size limits, graceful shutdown on SIGTERM, and port 0 support."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from firstlight.config import CommonSettings
from firstlight.hosting.auth import Authenticator, build_interceptor

log = logging.getLogger(__name__)

#: Returns True while the service can do its job (e.g. its Kafka consumer thread is alive).
Probe = Callable[[], bool]


@dataclass
class ServiceShell:
    """What a service plugs into :func:`serve`."""

    name: str
    #: Adds servicers to the server and returns their full service names.
    register: Callable[[grpc.aio.Server], Iterable[str]]
    #: Background work started after the port is bound (consumers, relays).
    on_start: Callable[[], Awaitable[None]] | None = None
    #: Stops background work; called after the server stopped taking RPCs.
    on_stop: Callable[[], Awaitable[None]] | None = None
    probes: list[Probe] = field(default_factory=list)
    #: Resolves API keys in-process (the ingestion service, which owns the keys); other
    #: services resolve them through the ingestion service's AuthService.
    authenticator: Authenticator | None = None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


def server_options(settings: CommonSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


#: Reflection v1 (what current grpcurl, Postman and grpcui ask first). The pinned
#: grpcio-reflection ships v1alpha only; v1's messages are v1alpha's under another package
#: (same fields, same numbers), so the same servicer answers both.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class _MethodAwarePool:
    """The descriptor pool reflection answers from, plus method symbols: protobuf's pool does not
    find "pkg.Service.Method", so `grpcurl describe pkg.Service.Method` said "Symbol not found"."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> object:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str):  # type: ignore[no-untyped-def]
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service, _, method = symbol.rpartition(".")
            if service:
                descriptor = self._pool.FindServiceByName(service)  # KeyError when not a service either
                if method in descriptor.methods_by_name:
                    return descriptor.file
            raise


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1alpha and v1 over the same descriptors, method symbols included."""
    names = [*service_names, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection_aio.ReflectionServicer(names, pool=_MethodAwarePool(descriptor_pool.Default()))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),))


def add_port(server: grpc.aio.Server, settings: CommonSettings) -> int:
    """Bind the gRPC port: TLS when a certificate and key are configured, plaintext otherwise."""
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise RuntimeError("set both FIRSTLIGHT_TLS_CERT_FILE and FIRSTLIGHT_TLS_KEY_FILE, or neither")
    if settings.tls_cert_file and settings.tls_key_file:
        credentials = grpc.ssl_server_credentials([(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())])
        return server.add_secure_port(address, credentials)
    return server.add_insecure_port(address)


async def serve(shell: ServiceShell, settings: CommonSettings, stop: asyncio.Event | None = None) -> None:
    """Run ``shell`` until SIGTERM/SIGINT (or ``stop`` is set)."""
    interceptor = build_interceptor(settings, shell.authenticator, shell.name)
    server = grpc.aio.server(options=server_options(settings), interceptors=[interceptor] if interceptor else None)
    names = list(shell.register(server))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    port = add_port(server, settings)
    if port == 0:
        raise RuntimeError(f"{shell.name}: could not bind {settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    if shell.on_start:
        await shell.on_start()

    async def set_all(status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for service in ["", *names]:
            await health.set(service, status)

    await set_all(health_pb2.HealthCheckResponse.SERVING)
    if settings.port_file:
        settings.port_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = settings.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(settings.port_file)  # atomic: readers never see a half-written port
    log.info("%s serving on %s:%d", shell.name, settings.grpc_host, port)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass

    async def watch_probes() -> None:
        healthy = True
        while not stop.is_set():
            now = all(probe() for probe in shell.probes)
            if now != healthy:
                healthy = now
                log.warning("%s health changed: %s", shell.name, "SERVING" if now else "NOT_SERVING")
                await set_all(health_pb2.HealthCheckResponse.SERVING if now else health_pb2.HealthCheckResponse.NOT_SERVING)
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch_probes())
    await stop.wait()
    log.info("%s shutting down (grace %.1fs)", shell.name, settings.shutdown_grace_s)
    watcher.cancel()
    await health.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    if shell.on_stop:
        await shell.on_stop()
    log.info("%s stopped", shell.name)


S = TypeVar("S", bound=CommonSettings)


def run(build: Callable[[S], ServiceShell], settings_type: type[S]) -> None:
    """Entry point of every service process: read and validate settings (a bad value fails
    here, naming the variable), build the service, serve until SIGTERM."""
    settings = settings_type()
    setup_logging(settings.log_level)
    asyncio.run(serve(build(settings), settings))
