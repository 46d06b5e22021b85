"""The gateway's Deployment, Service, Ingress, probes, network policy and compose service,
rendered like the rest (tests/unit/test_k8s_manifests.py holds the shared checks)."""

from __future__ import annotations

import pytest
import yaml
from test_k8s_manifests import DEPLOY, TARGETS, Rendered, _pod_spec, _render, _selects, needs_kubectl

from firstlight import config

pytestmark = needs_kubectl
SERVICES_CALLED = {"ingestion", "search", "inference", "training", "curation"}


@pytest.fixture(scope="module", params=list(TARGETS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param, _render(request.param))


def test_gateway_deployment_service_and_settings(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    dep = rendered.deployment("gateway")
    svc = rendered.get("Service", "gateway")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 8080
    assert rendered.get("Ingress", "gateway") is not None
    container = rendered.container("gateway")
    assert container["args"] == ["gateway"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", probe
    assert container["securityContext"]["readOnlyRootFilesystem"] and _pod_spec(dep)["securityContext"]["runAsNonRoot"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/blobs")
    assert mount["readOnly"], "the gateway only reads blobs"
    env = rendered.env("gateway")
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    if env.get("FIRSTLIGHT_SESSION_SECRET") is None:  # prod: from a Secret made out of band
        monkeypatch.setenv("FIRSTLIGHT_SESSION_SECRET", "s" * 40)
    settings = config.GatewaySettings()  # type: ignore[call-arg]
    addrs = (settings.ingestion_addr, settings.search_addr, settings.inference_addr, settings.training_addr, settings.curation_addr)
    hosts = {addr.split(":")[0] for addr in addrs}
    assert hosts == SERVICES_CALLED and settings.blob_url == "file:///blobs" and settings.cookie_secure


def test_prod_gateway_replicas_and_network_policy() -> None:
    prod = Rendered("prod", _render("prod"))
    assert prod.deployment("gateway")["spec"]["replicas"] >= 2
    assert prod.get("Secret", "firstlight-gateway") is None, "prod must not ship the placeholder session secret"
    labels = prod.deployment("gateway")["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in prod.all("NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)]
    egress = [rule for p in policies if "Egress" in p["spec"]["policyTypes"] and p["spec"]["podSelector"] for rule in p["spec"]["egress"]]
    reached = set()
    for rule in egress:
        assert [p["port"] for p in rule["ports"]] == [50051]
        for peer in rule["to"]:
            for expr in peer["podSelector"].get("matchExpressions", []):
                reached |= set(expr["values"])
            if "app.kubernetes.io/name" in peer["podSelector"].get("matchLabels", {}):
                reached.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    assert reached == SERVICES_CALLED
    ingress = [rule for p in policies if "Ingress" in p["spec"]["policyTypes"] for rule in p["spec"].get("ingress", [])]
    assert any(r["ports"] == [{"protocol": "TCP", "port": 8080}] for r in ingress)


def test_compose_runs_the_gateway() -> None:
    gw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["gateway"]
    assert gw["command"] == ["gateway"] and "blobs:/blobs:ro" in gw["volumes"]
    assert set(gw["depends_on"]) == SERVICES_CALLED
