"""The one place for configuration: a settings object per service, read from environment
variables prefixed ``FIRSTLIGHT_`` and validated at start-up (a bad value fails fast with
the variable's name). The same classes serve the embedded stack and a Kubernetes deployment;
only the values differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "deploy" / "triton" / "model_repository"


class SecuritySettings(BaseSettings):
    """Authentication, TLS and per-key limits (docs/security.md). Every service reads them; the
    services' own gRPC clients (search → embedding, training → ingestion, …) read them too."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    #: Refuse every RPC (health and reflection excepted) without a valid API key. Turn off only
    #: for a throwaway development server: with it on, a service without FIRSTLIGHT_ADMIN_KEY
    #: and FIRSTLIGHT_INTERNAL_KEY does not start.
    auth_required: bool = True
    #: The operator's key: creates apps and API keys, reaches every app. From a Secret.
    admin_key: SecretStr = SecretStr("")
    #: The key the services present to each other: reaches every app, no admin RPCs, no rate limit.
    internal_key: SecretStr = SecretStr("")
    #: Keys of the signed internal events: "<id>:<secret>[,<id>:<secret>…]"; the first signs,
    #: all verify (two during a rotation). From a Secret; only the services hold it
    #: (firstlight.messaging.signing reads it). Required with auth_required.
    event_keys: SecretStr = SecretStr("")
    #: Freshness window of signed events: a record signed longer ago is dead-lettered as a replay
    #: (0: none). The inference registry, which replays its topic from the start, has none.
    event_max_age_s: float = Field(7 * 24 * 3600.0, ge=0)
    #: IngestionService address, where the other services resolve app keys (AuthService).
    ingestion_addr: str = ""
    #: Seconds a service trusts a resolved app key before asking again (bounds how long a revoked
    #: key keeps working on services other than ingestion).
    auth_cache_s: float = Field(10.0, ge=0)
    #: Per-key token bucket, per service replica: sustained requests per second (0: no limit) and
    #: burst. Applies to app keys; the admin and internal keys are not limited.
    rate_limit_per_s: float = Field(50.0, ge=0)
    rate_limit_burst: int = Field(100, ge=1)
    #: Most items in any repeated field of a request (ids, annotations, texts…) from an app key;
    #: images per call have the tighter ``max_batch_size``.
    max_repeated_items: int = Field(10_000, ge=1)
    #: Serve gRPC over TLS with this PEM certificate chain and private key (both or neither).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: PEM root certificate(s) to verify the other services with when calling them over TLS
    #: (set it when the services serve TLS).
    tls_root_cert_file: Path | None = None


class KafkaClientSettings(BaseSettings):
    """How every Kafka client of a service connects (producers, consumers, topic admin): which
    principal it is and how the broker is verified (docs/security.md, k8s/components/kafka-mtls).
    Read by firstlight.messaging when it builds a client; PLAINTEXT (the local stack's loopback
    broker) by default."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    #: PLAINTEXT, SSL (TLS; with a client certificate it is mutual TLS and the certificate names
    #: the principal) or SASL_SSL (TLS plus a SASL user, e.g. SCRAM on a managed cluster).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    #: PEM CA bundle the broker's certificate is verified with (empty: the system's CAs).
    kafka_ssl_cafile: Path | None = None
    #: PEM client certificate and private key (mutual TLS): both or neither. From a Secret.
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    #: SASL_SSL only: mechanism, user and password (the password from a Secret).
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaClientSettings:
        tls = self.kafka_security_protocol != "PLAINTEXT"
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("FIRSTLIGHT_KAFKA_SSL_CERTFILE and FIRSTLIGHT_KAFKA_SSL_KEYFILE go together")
        if not tls and (self.kafka_ssl_cafile or self.kafka_ssl_certfile):
            raise ValueError("Kafka TLS files are set but FIRSTLIGHT_KAFKA_SECURITY_PROTOCOL is PLAINTEXT: set it to SSL")
        if self.kafka_security_protocol == "SASL_SSL" and not (self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
            raise ValueError("SASL_SSL needs FIRSTLIGHT_KAFKA_SASL_USERNAME and FIRSTLIGHT_KAFKA_SASL_PASSWORD")
        return self

    def kafka_client_options(self) -> dict[str, Any]:
        """The options kafka-python's producer, consumer and admin client take for this."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol, "ssl_check_hostname": True}
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = str(self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile and self.kafka_ssl_keyfile:
            options["ssl_certfile"] = str(self.kafka_ssl_certfile)
            options["ssl_keyfile"] = str(self.kafka_ssl_keyfile)
        if self.kafka_security_protocol == "SASL_SSL":
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return options


class CommonSettings(SecuritySettings, KafkaClientSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    #: Where local state lives (SQLite, blobs, vectors) in the embedded default.
    data_dir: Path = Path(".firstlight")
    #: Kafka bootstrap servers, comma-separated. Required: there is no sensible default.
    kafka_bootstrap: str = Field(..., min_length=3)
    #: Prefix for every topic name, to share one cluster between deployments.
    topic_prefix: str = ""
    #: Address the gRPC server binds to.
    grpc_host: str = "0.0.0.0"
    #: gRPC port (0 picks a free one; the chosen port is logged and written to ``port_file``).
    grpc_port: int = Field(0, ge=0, le=65535)
    #: If set, the bound port is written here (lets the local stack and tests use port 0).
    port_file: Path | None = None
    #: Largest gRPC message accepted, in bytes.
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    #: Seconds given to in-flight RPCs on SIGTERM (keep below the pod's grace period).
    shutdown_grace_s: float = Field(10.0, ge=0)
    log_level: str = "INFO"
    #: Kafka consumer session timeout: short, because group joins wait about half of it.
    kafka_session_timeout_ms: int = Field(6000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(1000, ge=100)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, value: str) -> str:
        for server in value.split(","):
            if ":" not in server:
                raise ValueError(f"'{server}' must be host:port")
        return value


class ImageLimits(BaseSettings):
    """Limits on uploaded images (shared by every service that decodes images)."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    #: Decoded pixels allowed (width × height): guards against decompression bombs.
    max_image_pixels: int = Field(40_000_000, ge=1)
    #: Longest side allowed, in pixels (a 1 × 40,000,000 strip passes the pixel limit, not this).
    max_image_side: int = Field(16_384, ge=1)
    #: Images per PostInputs / Predict / EmbedImages call.
    max_batch_size: int = Field(128, ge=1)
    #: Longest side of the thumbnail ingestion stores for each input (the Portal's grid); the
    #: same variable (FIRSTLIGHT_THUMBNAIL_PX) sets the gateway's, so the two agree.
    thumbnail_px: int = Field(192, ge=32, le=1024)


class VideoLimits(BaseSettings):
    """Limits on uploaded videos and how their frames are sampled (firstlight.video; defaults
    and how the thresholds were chosen: docs/video.md)."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    #: Bytes of one uploaded video (the original is kept in the blob store).
    max_video_bytes: int = Field(2 * 1024**3, ge=1)
    #: Seconds of video: a header declaring more is refused before decoding; a stream whose
    #: timestamps run past it is stopped there.
    max_video_duration_s: float = Field(3 * 3600.0, gt=0)
    #: Longest side and pixels of a frame (DCI 4K passes): a header or a decoded frame over
    #: either is refused before its pixels are allocated (decompression bombs).
    max_video_side: int = Field(4096, ge=16)
    max_video_pixels: int = Field(4096 * 2160, ge=256)
    #: Frames decoded from one video (a variable-frame-rate file can pack millions into a second).
    max_video_frames: int = Field(2_000_000, ge=1)
    #: Frames kept per second of video by the clock (scene changes come on top).
    video_sample_fps: float = Field(1.0, gt=0, le=60)
    #: Mean absolute luma difference (0-255, on a 64×36 thumbnail) between consecutive decoded
    #: frames that counts as a scene change (the frame is kept off the clock).
    video_scene_threshold: float = Field(30.0, gt=0, le=255)
    #: Scene-change keeps closer together than this are skipped (flashes, fast cuts).
    video_min_scene_gap_s: float = Field(0.5, ge=0)
    #: A frame the clock picks is dropped when it differs from the last kept frame by less
    #: than this (same 0-255 measure): a static shot keeps one frame, not one per second.
    video_duplicate_threshold: float = Field(2.0, ge=0, le=255)
    #: Kept frames are stored as JPEG with this longest side at most (the embedding and
    #: labeling need no more; the original stays in the blob store).
    video_frame_max_side: int = Field(1280, ge=64)


class IngestionSettings(CommonSettings, ImageLimits, VideoLimits):
    #: SQLAlchemy URL; SQLite by default, ``postgresql+psycopg://…`` in a cluster.
    database_url: str = ""
    #: Blob store URL: ``file:///abs/dir`` (default under data_dir).
    blob_url: str = ""
    #: SearchService address, for bulk labeling by search results (optional).
    search_addr: str = ""
    #: EmbeddingService address, to check a model before an app switches to it (optional).
    embedding_addr: str = ""
    #: Memory the checks of concurrent uploads' images may hold at once, in MiB (estimated from
    #: each image's header: JPEGs are checked at 1/8 scale, ~1/64 of the pixels). Uploads past
    #: it wait, up to 30 s, then get RESOURCE_EXHAUSTED; one image larger than it runs alone.
    decode_budget_mb: int = Field(256, ge=16)
    #: An input announced on ``inputs.ingested`` and not confirmed indexed (``inputs.indexed``)
    #: this long after the broker's ack is announced again; the deadline doubles per attempt.
    index_confirm_deadline_s: float = Field(300.0, gt=0)
    #: Announcements after the first before an unconfirmed input is given up on (logged).
    index_confirm_attempts: int = Field(8, ge=0)
    #: Where resumable video uploads keep their bytes until processed (default under data_dir;
    #: must survive a restart of the service, as the metadata does).
    video_upload_dir: Path = Path("")
    #: A resumable upload not written for this long is removed (when the service starts).
    video_upload_ttl_s: float = Field(24 * 3600.0, gt=0)
    #: Where integrations place videos they submit by reference on ``inputs.submit``
    #: (``<dir>/<app id>/<file>``). Empty: submissions by reference are dead-lettered.
    video_drop_dir: Path = Path("")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'metadata.db').resolve()}"

    def resolved_video_upload_dir(self) -> Path:
        return (self.video_upload_dir if str(self.video_upload_dir) not in ("", ".") else self.data_dir / "video-uploads").resolve()

    def resolved_blob_url(self) -> str:
        return self.blob_url or f"file://{(self.data_dir / 'blobs').resolve()}"


class EmbeddingSettings(CommonSettings, ImageLimits):
    #: Triton gRPC address (host:port). Required.
    triton_url: str = Field(..., min_length=3)
    triton_timeout_s: float = Field(30.0, gt=0)
    #: Token Triton wants in a header of every call but health (firstlight-triton-token; Triton
    #: started with --grpc-restricted-protocol/--http-restricted-api: docs/security.md).
    #: A Secret; the local stack generates one per start. Empty: Triton is not restricted.
    triton_token: str = Field("", repr=False)
    #: Blob store URL (same as ingestion's).
    blob_url: str = ""
    #: Inputs the event consumer takes per batch. They go to Triton in chunks of the backbone's
    #: max batch size, sent while the rest decode; a batch pays one produce-ack and one commit.
    embed_batch_size: int = Field(32, ge=1, le=256)
    #: Consumer group id (replicas share it; partitions spread across them).
    consumer_group: str = "embedding"
    #: Triton model repository (read-only here): which app embedders exist (checked before Triton
    #: is asked to load one), and the image size and dimension of those whose Triton config
    #: leaves them variable. Without it only the base backbone can embed.
    model_repository: Path = Path("")

    def resolved_blob_url(self) -> str:
        return self.blob_url or f"file://{(self.data_dir / 'blobs').resolve()}"


class SearchSettings(CommonSettings):
    #: ``edge://DIR`` (embedded Qdrant engine, default), ``memory://``, or ``http(s)://host:6333``.
    vector_store_url: str = ""
    #: EmbeddingService address, for query images and texts.
    embedding_addr: str = Field(..., min_length=3)
    consumer_group: str = "search"
    #: Upsert batch size for the indexer: each batch pays fixed round trips (acks of the
    #: inputs.indexed events, the offset commit); end to end 512 and 64 measured within noise.
    index_batch_size: int = Field(512, ge=1, le=4096)
    #: Background HNSW builds of the embedded engine (firstlight.search.index_builder): from this
    #: many points (below it searches are exact scans; 0 = never build, always scan) ...
    ann_build_min_points: int = Field(20_000, ge=0)
    #: ... once this share of the points is outside the graph ...
    ann_build_growth: float = Field(0.2, gt=0, le=1)
    #: ... after writes paused this long, or after this long of steady writes.
    ann_build_quiet_s: float = Field(5.0, ge=0)
    ann_build_max_wait_s: float = Field(300.0, ge=0)
    #: Niceness of the build process (0-19; > 0 yields the CPU to searches, but starves the build
    #: on a host where other busy processes compete).
    ann_build_nice: int = Field(0, ge=0, le=19)
    #: Fault injection (tests, game days): while this file exists every vector-store call fails
    #: as if Qdrant were down (firstlight.search.faults). Unset in deployments.
    vector_store_fault_file: Path | None = None

    def resolved_vector_store_url(self) -> str:
        return self.vector_store_url or f"edge://{(self.data_dir / 'vectors').resolve()}"


class InferenceSettings(CommonSettings, ImageLimits, VideoLimits):
    triton_url: str = Field(..., min_length=3)
    triton_timeout_s: float = Field(30.0, gt=0)
    #: Token Triton wants in a header of every call but health (firstlight-triton-token; Triton
    #: started with --grpc-restricted-protocol/--http-restricted-api: docs/security.md).
    #: A Secret; the local stack generates one per start. Empty: Triton is not restricted.
    triton_token: str = Field("", repr=False)
    #: Triton model repository (read-only here): image size and dimension of the trained
    #: embedder a head was trained on, when its Triton config leaves them variable. Optional.
    model_repository: Path = Path("")
    #: Predict/PredictWorkflow calls in flight at once (each holds a thread while Triton works).
    #: asyncio's default pool (cores + 4 threads: 6 here) capped concurrent requests below what
    #: Triton's dynamic batcher can merge; threads mostly wait on Triton, so more cost little.
    predict_threads: int = Field(32, ge=1, le=512)
    #: Versions of one app model Triton keeps loaded: the serving one and the most recently used
    #: or trained others; another is loaded on demand (firstlight.triton.residency).
    triton_keep_versions: int = Field(3, ge=1, le=64)
    #: App models (all apps together) Triton keeps loaded; the least recently used is unloaded.
    triton_max_app_models: int = Field(16, ge=1, le=4096)


class TritonSettings(BaseSettings):
    """How the backbone is served (firstlight.triton.tuning writes these into config.pbtxt).
    0 / None means "by device": several 1-thread instances with small batches on CPU, one
    instance with large batches on GPU."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    #: ``auto`` (GPU when torch sees CUDA), ``cpu`` or ``gpu``.
    triton_device: Literal["auto", "cpu", "gpu"] = "auto"
    #: Backbone instances (CPU: one per core, at most 4; GPU: 1 per GPU).
    triton_instances: int = Field(0, ge=0, le=64)
    #: torch intra-op threads per instance (CPU: cores // instances). Also read by model.py.
    torch_threads: int = Field(0, ge=0, le=256)
    #: Largest batch Triton forms (CPU: 8, large batches are slower per image there; GPU: 64).
    triton_max_batch: int = Field(0, ge=0, le=1024)
    #: Dynamic batcher wait for a fuller batch (CPU: 2000 µs; GPU: 5000 µs).
    triton_queue_delay_us: int | None = Field(None, ge=0, le=1_000_000)


class SupervisorSettings(BaseSettings):
    """What the supervisor of ``firstlight up`` enforces beyond restarting crashed components."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    #: The local broker's memory limit in MiB (0: none). Its memory storage keeps every record
    #: (tansu 0.6 has no retention), ~25 MiB a minute under `make load`; past the limit the
    #: supervisor restarts it as a Kubernetes memory limit would (a restart loses nothing:
    #: docs/reliability.md, "What a broker restart loses").
    broker_memory_limit_mb: int = Field(1024, ge=0, le=1_048_576)


class TrainingSettings(CommonSettings):
    #: SQLAlchemy URL of the training store (datasets, models, versions, jobs, evaluations).
    database_url: str = ""
    #: IngestionService address (labeled inputs, split write-back).
    ingestion_addr: str = Field(..., min_length=3)
    #: SearchService address (stored embeddings).
    search_addr: str = Field(..., min_length=3)
    #: Triton model repository trained versions are exported to (Triton must read the same one).
    model_repository: Path = Path("")
    #: Training jobs that run at once.
    workers: int = Field(2, ge=1, le=32)
    #: torch threads of deep-template training in this process. 1 by default: on a shared or
    #: oversubscribed CPU, 2 spinning OpenMP threads made an epoch ~20× slower than 1 (measured);
    #: raise it on a dedicated node (a GPU does the work there anyway).
    train_threads: int = Field(1, ge=1, le=256)
    #: EmbeddingService address and blob store URL: only for the ``augment_flip`` option.
    embedding_addr: str = ""
    blob_url: str = ""
    #: CurationService address: the data health check run on every dataset version frozen and
    #: recorded with it ("" = not run).
    curation_addr: str = ""

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'training.db').resolve()}"

    def resolved_model_repository(self) -> Path:
        return self.model_repository if str(self.model_repository) not in ("", ".") else self.data_dir / "model_repository"


class CurationSettings(CommonSettings):
    """The CurationService process (firstlight.curation.main): active learning, label errors,
    drift, data quality and the live labeling loop. It reaches the other services only through
    their gRPC APIs and events."""

    #: SQLAlchemy URL of the curation store (policies, labeling queue, counters, rounds).
    database_url: str = ""
    #: IngestionService (inputs, labels), SearchService (stored embeddings) and TrainingService
    #: (models, versions, datasets, scores; the rounds train through it) addresses.
    ingestion_addr: str = Field(..., min_length=3)
    search_addr: str = Field(..., min_length=3)
    training_addr: str = Field(..., min_length=3)
    #: Blob store URL the image-quality checks read inputs' bytes from (read-only; optional).
    blob_url: str = ""
    #: The training database of a deployment from before curation had its own store: on
    #: start-up, a new (empty) curation store copies curation's rows from it once
    #: (``curation.store.adopt_from_training_db``). Empty: nothing to adopt.
    adopt_from_database_url: str = ""

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'curation.db').resolve()}"


class GatewaySettings(SecuritySettings, VideoLimits):
    """The HTTP API gateway and the Portal (firstlight.gateway): a client of the services that
    passes each request's API key through, so it holds no key of its own; its one secret signs
    and encrypts the Portal's session cookies."""

    model_config = SettingsConfigDict(env_prefix="FIRSTLIGHT_", extra="ignore")

    #: The services it calls.
    ingestion_addr: str = Field(..., min_length=3)
    search_addr: str = Field(..., min_length=3)
    inference_addr: str = Field(..., min_length=3)
    training_addr: str = Field(..., min_length=3)
    curation_addr: str = Field(..., min_length=3)
    #: Blob store the inputs' images are read from (read-only; thumbnails and full images), after
    #: the ingestion service has answered GetInput for the caller's key.
    blob_url: str = Field(..., min_length=8)
    #: Where the HTTP server listens (port 0: a free one, written to ``port_file``).
    http_host: str = "0.0.0.0"
    http_port: int = Field(8080, ge=0, le=65535)
    port_file: Path | None = None
    #: Encrypts and authenticates the Portal's session cookies (32+ characters; the same on every
    #: replica, from a Secret). Changing it signs everyone out.
    session_secret: SecretStr = Field(..., min_length=32)
    #: Lifetime of a Portal session, in seconds (the cookie is refused after it).
    session_ttl_s: int = Field(12 * 3600, ge=60)
    #: Mark the session cookie Secure (only sent over HTTPS). On behind TLS; off for loopback.
    cookie_secure: bool = False
    #: Largest HTTP request body (uploads), bytes: larger ones are refused with 413.
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    #: Thumbnails kept in memory (LRU), and their longest side in pixels.
    thumbnail_cache: int = Field(4096, ge=0)
    thumbnail_px: int = Field(192, ge=32, le=1024)
    log_level: str = "INFO"
    #: Seconds given to in-flight requests on SIGTERM.
    shutdown_grace_s: float = Field(10.0, ge=0)
