"""The HTTP gateway against the gRPC path it fronts (issue 16's figures), on one local stack:

* Predict on the same JPEG: HTTP (``POST /v1/models/general/predict``, multipart) vs gRPC
  (``InferenceService.Predict``, the SDK's channel), concurrency 1 and 8, in interleaved rounds;
* a gallery page of 100 thumbnails at N inputs: the gateway's ``GET /v1/apps/{app}/inputs?page_size=100``
  (its ListInputs call included) — p50/p99 over pages spread across the app;
* thumbnail fetches (``GET …/thumbnail``, its GetInput call included): first and second fetch,
  p50/p99 (ingestion stored each input's thumbnail at upload: both read that blob; only inputs
  stored before thumbnails were would be decoded on the first fetch);
* the Portal gallery in headless Chromium (when Debian's chromium and chromium-driver are
  installed: ``make browser``): first contentful paint and the time to the first 60 thumbnails,
  as the browser reports them (reported, no goal: one browser on a shared machine).

``python -m bench --only gateway`` runs it as a section of ``make bench`` on the shared stack.

    python -m bench.gateway [--inputs 10000] [--seconds 10]   # starts its own stack
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import Row, latency, ms
from bench.inference import drive
from firstlight import datasets
from firstlight.runtime.channels import client_channel
from firstlight.v1 import inference_pb2, inference_pb2_grpc

ROUNDS = 3


def run(addresses: dict[str, str], gateway_url: str, admin_key: str, *, inputs: int = 10_000, seconds: float = 10.0, log=print) -> dict:  # type: ignore[no-untyped-def]
    photo = datasets.sample_photo("chelsea")
    h = {"Authorization": f"Bearer {admin_key}"}
    out: dict = {"predict": {}, "inputs": inputs}
    http = httpx.Client(base_url=gateway_url, timeout=120, headers=h, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
    channel = client_channel(addresses["inference"], api_key=admin_key)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    def grpc_call(data: bytes) -> object:
        return stub.Predict(inference_pb2.PredictRequest(model_id="general", images=[data], top_k=5), timeout=60)

    def http_call(data: bytes) -> object:
        r = http.post("/v1/models/general/predict", files={"file": ("p.jpg", data, "image/jpeg")}, data={"top_k": "5"})
        r.raise_for_status()
        return r

    for c in (1, 8):
        res: dict[str, list] = {"grpc": [], "http": []}
        for _ in range(ROUNDS):
            for name, call in (("grpc", grpc_call), ("http", http_call)):
                res[name].append(drive(call, [photo], c, seconds / ROUNDS))
        level = {}
        for name, runs in res.items():
            samples = [x for r in runs for x in r["_samples"]]
            level[name] = {"img_per_s": sum(r["requests"] for r in runs) / sum(r["seconds"] for r in runs), **latency(samples)}
        level["ratio"] = level["http"]["img_per_s"] / level["grpc"]["img_per_s"]
        out["predict"][c] = level
        log(f"predict c={c}: http {level['http']['img_per_s']:.1f}/s, grpc {level['grpc']['img_per_s']:.1f}/s ({level['ratio']:.2f}x)")

    # An app with `inputs` small images (upload through the API; listing needs no indexing).
    app = f"gw-bench-{int(time.time())}"
    http.post("/v1/apps", json={"id": app}).raise_for_status()
    items = datasets.animal_mnist(max(1, inputs // 10) + 1, seed=3)[:inputs]
    t0 = time.perf_counter()
    for begin in range(0, len(items), 128):
        chunk = items[begin : begin + 128]
        body = {"inputs": [{"id": i, "base64": base64.b64encode(d).decode(), "concepts": [c]} for i, c, d in chunk]}
        http.post(f"/v1/apps/{app}/inputs", json=body).raise_for_status()
    out["upload_s"] = time.perf_counter() - t0
    log(f"uploaded {len(items)} inputs in {out['upload_s']:.0f}s; waiting for indexing to finish (a quiet machine for the timings)")
    deadline = time.monotonic() + 1800
    while http.get(f"/v1/apps/{app}/index").json()["indexed_count"] < len(items) and time.monotonic() < deadline:
        time.sleep(2)
    tokens = [""]
    while len(tokens) < len(items) // 100:
        tokens.append(http.get(f"/v1/apps/{app}/inputs", params={"page_size": 100, "page_token": tokens[-1]}).json()["next_page_token"])
    page_lat = []
    for _ in range(3):
        for token in tokens:
            t = time.perf_counter()
            http.get(f"/v1/apps/{app}/inputs", params={"page_size": 100, "page_token": token}).raise_for_status()
            page_lat.append(time.perf_counter() - t)
    out["gallery_page"] = latency(page_lat)
    ids = [i for i, _, _ in random.Random(0).sample(items, min(500, len(items)))]
    cold, warm = [], []
    for lat in (cold, warm):
        for input_id in ids:
            t = time.perf_counter()
            http.get(f"/v1/apps/{app}/inputs/{input_id}/thumbnail").raise_for_status()
            lat.append(time.perf_counter() - t)
    out["thumbnail_first"] = latency(cold)
    out["thumbnail_cached"] = latency(warm)
    log(
        f"gallery page p50 {ms(out['gallery_page']['p50_s'])} p99 {ms(out['gallery_page']['p99_s'])}; "
        f"thumbnail first p99 {ms(out['thumbnail_first']['p99_s'])}, cached p99 {ms(out['thumbnail_cached']['p99_s'])}"
    )
    out["browser"] = first_paint(gateway_url, admin_key, app, log=log)
    http.close()
    channel.close()
    return out


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def first_paint(gateway_url: str, admin_key: str, app: str, *, runs: int = 3, log=print) -> dict | None:  # type: ignore[no-untyped-def]
    """Chromium's first contentful paint of the gallery and the time until 60 thumbnails are in
    the grid (median of ``runs`` loads, the session cookie already set); None without a browser."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        log("no chromium/chromedriver (make browser): the gallery's first paint is not measured")
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000", "--no-first-run"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        d.get(f"{gateway_url}/portal/sign-in")
        d.find_element(By.ID, "api-key").send_keys(admin_key)
        d.find_element(By.ID, "app-id-input").send_keys(app)
        d.find_element(By.ID, "sign-in").click()
        fcp, tiles = [], []
        for _ in range(runs):
            d.get(f"{gateway_url}/portal/apps/{app}/gallery")
            WebDriverWait(d, 60, poll_frequency=0.02).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .tile img")) >= 60)
            WebDriverWait(d, 60, poll_frequency=0.02).until(
                lambda d: d.execute_script("return [...document.querySelectorAll('#grid .tile img')].slice(0, 60).every(i => i.complete)")
            )
            paint = dict(d.execute_script("return performance.getEntriesByType('paint').map(e => [e.name, e.startTime])"))
            # The last of the first 60 thumbnails to finish loading, from navigation start.
            done = d.execute_script(
                "const ids = new Set([...document.querySelectorAll('#grid .tile img')].slice(0, 60).map(i => i.src));"
                "return Math.max(...performance.getEntriesByType('resource').filter(e => ids.has(e.name)).map(e => e.responseEnd))"
            )
            fcp.append(paint.get("first-contentful-paint", 0.0) / 1000)
            tiles.append(float(done) / 1000)
        out = {"first_contentful_paint": latency(fcp), "sixty_thumbnails": latency(tiles)}
        log(
            f"gallery in Chromium: first contentful paint {ms(out['first_contentful_paint']['p50_s'])}, "
            f"60 thumbnails loaded at {ms(out['sixty_thumbnails']['p50_s'])}"
        )
        return out
    finally:
        d.quit()


def rows(r: dict) -> list[Row]:
    out = []
    for c, level in r["predict"].items():
        h, g = level["http"], level["grpc"]
        out.append(
            Row(
                f"HTTP predict (gateway, multipart) vs gRPC Predict, concurrency {c}",
                f"{h['img_per_s']:.1f} img/s, p50 {ms(h['p50_s'])}, p99 {ms(h['p99_s'])}",
                f"gRPC {g['img_per_s']:.1f} img/s, p50 {ms(g['p50_s'])}",
                f"{level['ratio']:.2f}×",
                "≥ 0.9×",
                level["ratio"] >= 0.9,
            )
        )
    p = r["gallery_page"]
    out.append(
        Row(
            f"gallery page of 100 (GET /v1/…/inputs, ListInputs included) at {r['inputs']:,} inputs",
            f"p50 {ms(p['p50_s'])}, p99 {ms(p['p99_s'])} (n={p['n']})",
            "",
            "",
            "p99 < 100 ms",
            p["p99_s"] < 0.1,
        )
    )
    for name, label in (
        ("thumbnail_first", "thumbnail, first fetch (GetInput + the stored thumbnail's blob read)"),
        ("thumbnail_cached", "thumbnail, second fetch (GetInput included)"),
    ):
        t = r[name]
        out.append(Row(label, f"p50 {ms(t['p50_s'])}, p99 {ms(t['p99_s'])} (n={t['n']})", "", "", "p99 < 20 ms", t["p99_s"] < 0.02))
    b = r.get("browser")
    if b:
        out.append(
            Row(
                f"Portal gallery in headless Chromium at {r['inputs']:,} inputs (median of {b['first_contentful_paint']['n']} loads)",
                f"first contentful paint {ms(b['first_contentful_paint']['p50_s'])}; first 60 thumbnails loaded at {ms(b['sixty_thumbnails']['p50_s'])}",
                "",
                "",
                "reported",
            )
        )
    return out


def main(argv: list[str]) -> int:
    from bench.__main__ import machine, machine_text
    from firstlight.stack import LocalStack

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--inputs", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    os.environ.setdefault("FIRSTLIGHT_TORCH_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp)) as stack:
        result = run(stack.addresses, stack.gateway_url, stack.admin_key, inputs=args.inputs, seconds=args.seconds)
    print(f"Machine: {machine_text(machine())}")
    for row in rows(result):
        print(f"| {row.benchmark} | {row.figure} | {row.baseline} | {row.ratio} | {row.goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
