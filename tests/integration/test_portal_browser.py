"""The Portal in a real browser: Debian's headless Chromium driven by Selenium (chromium-driver)
against the session's real stack. Walks sign-in, the gallery (infinite scroll, filters), an
input page with hostile strings, text search → untick (click, shift-click, keyboard) → bulk
label, a dataset → training with live progress → evaluation → a confusion-matrix cell's exact
inputs, the
labeling queue (keys 1–9, x, u; a lease another labeler cannot take; who labeled, on the input
page), a second version compared side by side with the first, promotion by hand under the rule,
scoring the pool and filtering the gallery by prediction, the queue fed by the stored scores, the
curation page with the learning curve and the drift report, and the docs page. Screenshots of every page go to
test-artifacts/portal/ (FIRSTLIGHT_TEST_ARTIFACTS overrides).

A missing browser is a failure in CI (a "missing tool" skip elsewhere, tests/conftest.py):
`make browser` (run by `make test`) installs it."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.config import REPO_ROOT

from .helpers import b64, eventually, predict_stored, wait_queued

pytestmark = pytest.mark.integration

APP = "portal-ui"
CLASSES = ["cat", "dog", "horse", "elephant"]
HOSTILE = "<img src=x onerror=alert(1)>\"'><script>alert(2)</script> javascript:alert(3)"
#: Right-to-left override: refused in concept names (a control character), kept in metadata.
HOSTILE_FILE = HOSTILE + "\u202egnp.exe"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("FIRSTLIGHT_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts") / "portal"


@pytest.fixture(scope="module")
def app_key(stack) -> str:  # type: ignore[no-untyped-def]
    """An app with 80 animals (half labeled) and a hostile-named input; its key."""
    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.gateway_url, timeout=120) as gw:
        assert gw.post("/v1/apps", json={"id": APP}, headers=admin).status_code == 201
        key = gw.post(f"/v1/apps/{APP}/keys", json={"name": "browser"}, headers=admin).json()["secret"]
        h = {"Authorization": f"Bearer {key}"}
        items = datasets.animal_mnist(20, seed=11, classes=CLASSES)
        inputs = [{"id": i, "base64": b64(d), "concepts": [c] if n % 2 == 0 else []} for n, (i, c, d) in enumerate(items)]
        inputs.append({"id": "hostile", "base64": b64(items[0][2]), "concepts": [HOSTILE], "metadata": {"filename": HOSTILE_FILE}})
        assert gw.post(f"/v1/apps/{APP}/inputs", json={"inputs": inputs}, headers=h).status_code == 201
        eventually(lambda: gw.get(f"/v1/apps/{APP}/index", headers=h).json()["indexed_count"] >= len(inputs), 180, what="indexed")
    return key


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:  # type: ignore[name-defined]  # noqa: F821
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:  # tests/conftest.py turns a "missing tool" skip into a failure in CI
        pytest.skip(f"missing tool: {', '.join(missing)}: `make browser` installs Debian's chromium and chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-first-run",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> None:  # type: ignore[no-untyped-def]
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(driver, check, timeout: float = 60, what: str = "condition"):  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d):  # type: ignore[no-untyped-def]
        # A form POST replaces the page while the check reads it: an element of the old page is
        # stale (chromium may say "does not belong to the document"); look again at the next poll.
        try:
            return check(d)
        except StaleElementReferenceException:
            return False
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return False
            raise

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(attempt, message=what)


def no_alert(driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - a script injected by a hostile string would have opened one


def flash(driver) -> str:  # type: ignore[no-untyped-def]
    return driver.find_element("id", "flash").text


def new_app_key(stack, app_id: str) -> str:  # type: ignore[no-untyped-def]
    """Create ``app_id`` with the admin key; an API key of it."""
    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.gateway_url, timeout=120) as gw:
        assert gw.post("/v1/apps", json={"id": app_id}, headers=admin).status_code == 201
        return str(gw.post(f"/v1/apps/{app_id}/keys", json={"name": "browser"}, headers=admin).json()["secret"])


def sign_in(driver, base: str, key: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/portal/sign-in")
    wait(driver, lambda d: d.find_elements(By.ID, "api-key"), what="sign-in form")
    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.ID, "sign-in").click()
    wait(driver, lambda d: "/gallery" in d.current_url, what="signed in")


def test_portal_walk(stack, app_key: str, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    base = stack.gateway_url
    h = {"Authorization": f"Bearer {app_key}"}
    api = httpx.Client(base_url=base, timeout=120, headers=h)
    timings: dict[str, float] = {}

    # Sign in.
    d.get(f"{base}/portal/")
    wait(d, lambda d: d.find_elements(By.ID, "api-key"), what="sign-in form")
    shot(d, "01-sign-in")
    d.find_element(By.ID, "api-key").send_keys("flk_000000000000_" + "x" * 43)
    d.find_element(By.ID, "sign-in").click()
    assert "not valid" in wait(d, lambda d: d.find_elements(By.ID, "sign-in-error"))[0].text
    d.find_element(By.ID, "api-key").send_keys(app_key)
    d.find_element(By.ID, "sign-in").click()

    # Gallery: thumbnails, infinite scroll over two pages, filters.
    t0 = time.monotonic()
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .tile")) >= 60, what="first gallery page")
    timings["gallery_first_page_s"] = time.monotonic() - t0
    assert d.find_element(By.ID, "gallery-count").text == "81 inputs"
    wait(
        d,
        lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
            for i in d.find_elements(By.CSS_SELECTOR, "#grid .tile img")[:12]
        ),
        what="thumbnails loaded",
    )
    shot(d, "02-gallery")
    # The grid shows the thumbnail ingestion stored from its decode (the original never reaches it).
    first = d.find_elements(By.CSS_SELECTOR, "#grid .tile img")[0]
    src = first.get_attribute("src")
    input_id = src.rsplit("/", 2)[-2]
    stored = (stack.data_dir / "blobs" / APP / f".thumb-{input_id}").read_bytes()
    assert api.get(src).content == stored
    assert d.execute_script("return arguments[0].naturalWidth", first) == Image.open(io.BytesIO(stored)).size[0]
    d.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .tile")) == 81, what="second page by scrolling")
    from selenium.webdriver.support.ui import Select

    Select(d.find_element(By.ID, "filter-concept")).select_by_value("dog")
    wait(d, lambda d: d.find_element(By.ID, "gallery-count").text == "10 inputs", what="concept filter")
    assert len(d.find_elements(By.CSS_SELECTOR, "#grid .tile")) == 10
    shot(d, "03-gallery-filtered")
    # Upload a folder: class sub-folders become concepts (one refused file is reported).
    folder = ARTIFACTS.parent / "upload-folder"
    for input_id, concept, data in datasets.animal_mnist(2, seed=99, classes=["zebra", "giraffe"]):
        (folder / "animals" / concept).mkdir(parents=True, exist_ok=True)
        (folder / "animals" / concept / f"{input_id}.png").write_bytes(data)
    (folder / "animals" / "zebra" / "broken.png").write_bytes(b"not a png")
    Select(d.find_element(By.ID, "filter-concept")).select_by_value("")
    wait(d, lambda d: d.find_element(By.ID, "gallery-count").text == "81 inputs", what="filter cleared")
    d.find_element(By.ID, "upload-folder").click()
    d.find_element(By.ID, "upload-files").send_keys(str(folder / "animals"))
    d.find_element(By.ID, "upload").click()
    wait(d, lambda d: "Uploaded 4 of 5; refused: " in flash(d) and "broken.png" in flash(d), what="folder uploaded")
    wait(d, lambda d: d.find_element(By.ID, "gallery-count").text == "85 inputs", what="gallery shows the upload")
    zebras = api.get(f"/v1/apps/{APP}/inputs", params={"concept": "zebra"}).json()["inputs"]
    assert len(zebras) == 2 and all(i["metadata"]["filename"].endswith(".png") for i in zebras)
    shot(d, "03b-gallery-uploaded")
    # The hostile concept is in the filter as text.
    assert any(HOSTILE in o.text for o in Select(d.find_element(By.ID, "filter-concept")).options)
    no_alert(d)

    # Input page with hostile strings: shown as text, never run.
    d.get(f"{base}/portal/apps/{APP}/inputs/hostile")
    chip = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#input-concepts li a"), what="input labels")[0]
    assert chip.text == HOSTILE
    # The right-to-left override is shown as a visible code point, not obeyed.
    wait(
        d,
        lambda d: HOSTILE + "[U+202E]gnp.exe" in [td.get_attribute("textContent") for td in d.find_elements(By.CSS_SELECTOR, "#metadata td")],
        what="metadata shown",
    )
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours .tile")) >= 6, what="neighbours")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#predictions li"), what="predictions")
    no_alert(d)
    # Draw a box on the image and name it.
    img = d.find_element(By.ID, "full-image")
    ActionChains(d).move_to_element_with_offset(img, -img.size["width"] // 4, -img.size["height"] // 4).click_and_hold().move_by_offset(
        img.size["width"] // 3, img.size["height"] // 3
    ).release().perform()
    d.find_element(By.ID, "new-concept").send_keys("blob", Keys.ENTER)
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#stage .box:not(.drawing)"), what="box drawn")
    region = api.get(f"/v1/apps/{APP}/inputs/hostile").json()["regions"][0]
    assert region["concept"] == "blob" and 0.1 < region["box"]["x0"] < 0.4 and region["box"]["x1"] > region["box"]["x0"] + 0.2
    shot(d, "04-input-page")

    # Text search → untick the wrong ones → bulk label the rest.
    d.get(f"{base}/portal/apps/{APP}/search")
    Select(d.find_element(By.ID, "search-size")).select_by_visible_text("24")
    d.find_element(By.ID, "search-unlabeled").click()
    d.find_element(By.ID, "search-text").send_keys("horse", Keys.ENTER)
    tiles = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .tile"), what="search results")
    assert len(tiles) == 24 and d.find_element(By.ID, "selection-count").text == "24 of 24 selected"
    ids = [t.get_attribute("data-id") for t in tiles]
    truth = {i: c for i, c, _ in datasets.animal_mnist(20, seed=11, classes=CLASSES)}
    wrong = [n for n, i in enumerate(ids) if truth[i] != "horse"]
    assert wrong, "every result is a horse: nothing to untick"
    done: set[int] = set()
    # A run of wrong ones: click its first, shift-click its last.
    run = next(((a, b) for a in wrong for b in (a + 2, a + 1) if all(k in wrong for k in range(a, b + 1))), None)
    if run:
        tiles[run[0]].click()
        ActionChains(d).key_down(Keys.SHIFT).click(tiles[run[1]]).key_up(Keys.SHIFT).perform()
        done |= set(range(run[0], run[1] + 1))
    else:
        tiles[wrong[0]].click()
        done.add(wrong[0])
    # The next wrong one with the keyboard: arrows from the last clicked tile, then space.
    rest = [n for n in wrong if n not in done]
    if rest:
        here = run[1] if run else wrong[0]
        arrow = Keys.ARROW_RIGHT if rest[0] > here else Keys.ARROW_LEFT
        d.find_element(By.ID, "results").send_keys(*([arrow] * abs(rest[0] - here)), " ")
        done.add(rest[0])
    for n in wrong:  # the others by clicking
        if n not in done:
            tiles[n].click()
    assert d.find_element(By.ID, "selection-count").text == f"{len(ids) - len(wrong)} of {len(ids)} selected"
    unticked = {ids[n] for n in wrong}
    assert {t.get_attribute("data-id") for t in d.find_elements(By.CSS_SELECTOR, "#results .tile:not(.selected)")} == unticked
    shot(d, "05-search-unticked")
    concept = d.find_element(By.ID, "bulk-concept")
    assert concept.get_attribute("value") == "horse"
    concept.clear()
    concept.send_keys("horse-ui")
    d.find_element(By.ID, "bulk-apply").click()
    wait(d, lambda d: f"Labeled {len(ids) - len(wrong)} inputs" in flash(d), what="bulk label done")
    shot(d, "06-search-labeled")
    labeled = {i["id"] for i in api.get(f"/v1/apps/{APP}/inputs", params={"concept": "horse-ui", "page_size": 100}).json()["inputs"]}
    assert labeled == set(ids) - unticked

    # Dataset → training with live progress → evaluation → a confusion-matrix cell.
    api.post(f"/v1/apps/{APP}/annotations/bulk", json={"input_ids": sorted(labeled), "remove_concepts": ["horse-ui"]}, headers={})
    d.get(f"{base}/portal/apps/{APP}/models")
    d.find_element(By.ID, "dataset-id").send_keys("main")
    d.find_element(By.ID, "dataset-concepts").send_keys(",".join(CLASSES))
    d.find_element(By.ID, "dataset-create").click()
    wait(d, lambda d: "Dataset main" in d.find_element(By.ID, "dataset-result").text, what="dataset frozen")
    d.find_element(By.ID, "model-id").send_keys("animals")
    d.find_element(By.ID, "model-concepts").send_keys(",".join(CLASSES))
    shot(d, "07-models")
    d.find_element(By.ID, "train-start").click()
    wait(d, lambda d: "/jobs/" in d.current_url, what="job page")
    link = wait(d, lambda d: d.find_elements(By.ID, "job-evaluation"), 180, what="training finished")[0]
    assert d.find_elements(By.CSS_SELECTOR, "#job-steps tbody tr")
    shot(d, "08-training-job")
    link.click()
    cells = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#confusion a.cell"), 120, what="confusion matrix")
    assert len(cells) == len(CLASSES) ** 2
    assert d.find_elements(By.CSS_SELECTOR, "#eval-metrics tr")
    shot(d, "09-evaluation")
    # An off-diagonal cell with inputs if there is one (a mistake to look at), else the first.
    counts = [int(c.text) for c in cells]
    pick = next((k for k, n in enumerate(counts) if n and k % (len(CLASSES) + 1)), 0)
    cells[pick].click()
    wait(d, lambda d: "/gallery?" in d.current_url and len(d.find_elements(By.CSS_SELECTOR, "#grid .tile")) == counts[pick], what="gallery from a cell")
    note = d.find_element(By.ID, "cell-note").text
    true_c, pred_c = CLASSES[pick // len(CLASSES)], CLASSES[pick % len(CLASSES)]
    assert f"true concept {true_c} predicted as {pred_c}" in note, note
    assert all(t.text.startswith(f"{true_c} → {pred_c}") for t in d.find_elements(By.CSS_SELECTOR, "#grid .tile .concepts"))
    shot(d, "10-gallery-from-cell")

    # Labeling queue: the policy's model screens predictions on unlabeled inputs.
    policy = {"model_id": "animals", "strategy": "entropy", "threshold": 0.0001, "budget": 100}
    assert api.put(f"/v1/apps/{APP}/curation/policy", json=policy).status_code == 200
    unlabeled = [i["id"] for i in api.get(f"/v1/apps/{APP}/inputs", params={"labeled": "unlabeled", "page_size": 5}).json()["inputs"]]
    for input_id in unlabeled:
        predict_stored(api, APP, input_id, "animals")
    wait_queued(api, APP, 3)
    d.get(f"{base}/portal/apps/{APP}/queue")
    wait(d, lambda d: d.find_element(By.ID, "queue-item").text, what="queue item")
    assert [e.text for e in d.find_elements(By.CSS_SELECTOR, "#queue-keys li span")] == CLASSES
    shot(d, "11-queue")
    first = d.find_element(By.ID, "queue-item").text.split(" · ")[0]
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys("2")  # dog
    wait(d, lambda d: f"{first} → dog" in flash(d), what="labeled from the keyboard")
    assert api.get(f"/v1/apps/{APP}/inputs/{first}").json()["concepts"] == ["dog"]
    second = wait(d, lambda d: (t := d.find_element(By.ID, "queue-item").text.split(" · ")[0]) != first and t, what="next item").strip()
    body.send_keys("x")  # skip
    wait(d, lambda d: d.find_element(By.ID, "queue-item").text.split(" · ")[0] not in (second, ""), what="skipped")
    body.send_keys("u")  # undo the label
    wait(d, lambda d: "Undid" in flash(d), what="undo")
    assert api.get(f"/v1/apps/{APP}/inputs/{first}").json()["concepts"] == []
    shot(d, "12-queue-after-undo")
    # Leases: another labeler never gets the item this browser shows; the label records the key.
    shown = wait(d, lambda d: d.find_element(By.ID, "queue-item").text, what="queue item after undo").split(" · ")[0]
    assert "leased to you until" in d.find_element(By.ID, "queue-lease").text
    other = api.post(f"/v1/apps/{APP}/curation/queue/lease", json={"holder": "another-labeler"}).json()
    assert other["item"] and other["item"]["input_id"] != shown, (shown, other)
    body.send_keys("1")
    wait(d, lambda d: f"{shown} → {CLASSES[0]}" in flash(d), what="labeled again")
    d.get(f"{base}/portal/apps/{APP}/inputs/{shown}")
    by = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#input-concepts li .by"), what="who labeled")[0].text
    assert by.startswith("by browser (") and "UTC" in by, by
    shot(d, "12a-input-who-labeled")

    # A second version on more labels, each version's pool-based round recorded: two points on
    # the learning curve, and two versions to compare.
    v1 = api.get(f"/v1/apps/{APP}/models/animals").json()["versions"][0]["version"]
    r = api.post(f"/v1/apps/{APP}/curation/suggestions", json={"model_id": "animals", "model_version": v1, "batch_size": 20, "record_round": True})
    assert r.status_code == 200, r.text
    picked = [s["input_id"] for s in r.json()["suggestions"] if s["input_id"] in truth]
    for concept in CLASSES:  # the oracle labels what the model suggested
        ids_c = [i for i in picked if truth[i] == concept]
        if ids_c:
            assert api.post(f"/v1/apps/{APP}/annotations/bulk", json={"input_ids": ids_c, "add_concepts": [concept]}).status_code == 200
    # The same validation and test inputs (written back to the inputs at the first freeze); the new labels go to train.
    ds = api.post(f"/v1/apps/{APP}/datasets", json={"id": "main", "concepts": CLASSES, "split": {"from_inputs": True}})
    assert ds.status_code == 201, ds.text
    job = api.post(f"/v1/apps/{APP}/models/animals/train", json={"dataset_id": "main"}).json()
    done_job = eventually(
        lambda: (j := api.get(f"/v1/apps/{APP}/jobs/{job['id']}").json())["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED") and j,
        180,
        what="second version trained",
    )
    assert done_job["state"] == "JOB_STATE_SUCCEEDED", done_job
    v2 = done_job["version"]
    r = api.post(f"/v1/apps/{APP}/curation/suggestions", json={"model_id": "animals", "model_version": v2, "batch_size": 5, "record_round": True})
    assert r.status_code == 200, r.text

    # The gallery filtered by the dataset version just frozen (the latest, by default).
    listed = api.get(f"/v1/apps/{APP}/inputs", params={"dataset_id": "main", "page_size": 1}).json()
    assert listed["dataset_version"] == ds.json()["version"] and listed["total_size"] > 0
    d.get(f"{base}/portal/apps/{APP}/gallery?dataset_id=main")
    want = f"{listed['total_size']} inputs of main, version {listed['dataset_version']}"
    wait(d, lambda d: d.find_element(By.ID, "gallery-count").text == want, what="dataset version filter")
    assert len(d.find_elements(By.CSS_SELECTOR, "#grid .tile")) == min(60, listed["total_size"])
    shot(d, "12a2-gallery-dataset-version")

    # Two versions side by side: from the models page's "compare" link.
    d.get(f"{base}/portal/apps/{APP}/models")
    compare_links = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#models-table a.compare"), what="compare link")
    assert len(d.find_elements(By.CSS_SELECTOR, "#models-table tbody tr")) == 2 and len(compare_links) == 2
    shot(d, "12b-models-two-versions")
    compare_links[0].click()
    wait(d, lambda d: d.find_elements(By.ID, "compare-metrics"), 120, what="comparison")
    assert Select(d.find_element(By.ID, "compare-a")).first_selected_option.get_attribute("value") == v1
    assert Select(d.find_element(By.ID, "compare-b")).first_selected_option.get_attribute("value") == v2
    rows = {
        tr.get_attribute("data-metric"): [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in d.find_elements(By.CSS_SELECTOR, "#compare-metrics tbody tr")
    }
    assert {"accuracy", "macro_f1", "ece"} <= set(rows) and rows["n"][0] == rows["n"][1]  # the same validation inputs
    assert not d.find_elements(By.CSS_SELECTOR, ".compare-note")  # so no "different sets" warning
    for side in ("a", "b"):
        assert len(d.find_elements(By.CSS_SELECTOR, f"#confusion-{side} a.cell")) == len(CLASSES) ** 2
    assert len(d.find_elements(By.CSS_SELECTOR, "#compare-concepts tbody tr")) == len(CLASSES)
    shot(d, "13-compare")
    d.execute_script("document.getElementById('compare-concepts').scrollIntoView()")
    shot(d, "13a-compare-matrices")
    Select(d.find_element(By.ID, "compare-split")).select_by_visible_text("test")
    d.find_element(By.ID, "compare-go").click()
    wait(d, lambda d: "split=test" in d.current_url and d.find_elements(By.ID, "compare-metrics"), 120, what="comparison on test")
    shot(d, "13b-compare-test")

    # Promote by hand from the evaluation page: the rule decides; an override needs a reason.
    serving = api.get(f"/v1/apps/{APP}/models/animals").json()["model"]["serving_version"]
    other_v = v1 if serving == v2 else v2
    d.get(f"{base}/portal/apps/{APP}/models/animals/versions/{other_v}/evaluation")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#confusion a.cell"), 120, what="evaluation to promote from")
    wait(d, lambda d: "serves now" in d.find_element(By.ID, "promote-state").text, what="serving version shown")
    d.find_element(By.ID, "promote").click()

    def verdict(d):  # type: ignore[no-untyped-def]
        t = d.find_element(By.ID, "promote-state").text
        return t if "refuses" in t or "promoted by hand" in t else ""

    state = wait(d, verdict, what="promotion verdict")
    if "refuses" in state:  # the rule kept the serving version: override, saying why
        shot(d, "13c-promote-refused")
        d.find_element(By.ID, "promote-reason").send_keys("reviewed the evaluation: promote anyway")
        d.find_element(By.ID, "promote").click()
        wait(d, lambda d: "over the rule" in d.find_element(By.ID, "promote-state").text, what="promoted over the rule")
    assert api.get(f"/v1/apps/{APP}/models/animals").json()["model"]["serving_version"] == other_v
    shot(d, "13d-promoted")

    # Score the pool with the serving version and filter the gallery by its predictions.
    d.get(f"{base}/portal/apps/{APP}/gallery")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filter-model option")) > 1, what="models in the filter")
    Select(d.find_element(By.ID, "filter-model")).select_by_value("animals")
    d.find_element(By.ID, "score-pool").click()
    wait(d, lambda d: d.find_element(By.ID, "score-state").text.startswith("predictions of v"), 120, what="pool scored")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filter-predicted option")) == len(CLASSES) + 1, what="model concepts")
    Select(d.find_element(By.ID, "filter-predicted")).select_by_value("cat")
    Select(d.find_element(By.ID, "filter-order")).select_by_value("uncertainty")
    wait(d, lambda d: "order=uncertainty" in d.current_url and "predicted=cat" in d.current_url, what="filter applied")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .tile"), what="cats by uncertainty")
    assert all(t.text == "→ cat" for t in d.find_elements(By.CSS_SELECTOR, "#grid .tile .concepts"))
    scores = [float(t.text) for t in d.find_elements(By.CSS_SELECTOR, "#grid .tile .score")]
    assert scores and max(scores) <= 1.0
    shot(d, "13e-gallery-by-prediction")
    # The label filters apply to the predictions too (one query in curation): unlabeled cats only.
    Select(d.find_element(By.ID, "filter-labeled")).select_by_value("unlabeled")
    wait(d, lambda d: "labeled=unlabeled" in d.current_url and "predicted=cat" in d.current_url, what="label filter with the prediction filter")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .tile") or "No inputs match" in d.find_element(By.ID, "sentinel").text, what="unlabeled cats")
    for t in d.find_elements(By.CSS_SELECTOR, "#grid .tile")[:8]:
        assert api.get(f"/v1/apps/{APP}/inputs/{t.get_attribute('data-id')}").json()["concepts"] == []
    Select(d.find_element(By.ID, "filter-labeled")).select_by_value("")
    # The same stored scores as a labeling source: the most uncertain unlabeled input first.
    d.get(f"{base}/portal/apps/{APP}/queue?source=scores&model=animals")
    wait(d, lambda d: "uncertainty" in d.find_element(By.ID, "queue-item").text and "v" in d.find_element(By.ID, "queue-item").text, what="pool item")
    pool_item = d.find_element(By.ID, "queue-item").text.split(" · ")[0]
    assert api.get(f"/v1/apps/{APP}/inputs/{pool_item}").json()["concepts"] == []
    shot(d, "13f-queue-from-pool-scores")
    d.find_element(By.TAG_NAME, "body").send_keys("3")
    wait(d, lambda d: f"{pool_item} → {CLASSES[2]}" in flash(d), what="labeled from the pool")
    # The flash comes before the next item is fetched (a GetInput per candidate): wait for it.
    wait(d, lambda d: d.find_element(By.ID, "queue-item").text.split(" · ")[0] != pool_item, what="next pool item")

    # Curation page: policy, label errors, the learning curve (drawn by the gateway) and drift.
    d.get(f"{base}/portal/apps/{APP}/curation")
    wait(d, lambda d: "animals" in d.find_element(By.ID, "policy-state").text, what="policy shown")
    points = d.find_elements(By.CSS_SELECTOR, "#learning-curve circle.point")
    assert [p.get_attribute("data-round") for p in points] == ["1", "2"]
    assert len(d.find_elements(By.CSS_SELECTOR, "#rounds tbody tr")) == 2
    d.find_element(By.ID, "label-errors-run").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#label-errors tbody tr"), 120, what="label errors")
    no_alert(d)
    shot(d, "14-curation")
    d.find_element(By.ID, "drift-recent").clear()
    d.find_element(By.ID, "drift-recent").send_keys("20")
    d.find_element(By.ID, "drift-run").click()
    verdict = wait(d, lambda d: d.find_elements(By.ID, "drift-verdict"), 120, what="drift report")[0].text
    assert verdict.startswith(("No drift", "Drift:")) and "20 newest inputs" in verdict, verdict
    assert len(d.find_elements(By.CSS_SELECTOR, "#drift tbody tr")) == 4
    assert d.find_elements(By.CSS_SELECTOR, "#learning-curve circle.point")  # the curve stays
    shot(d, "15-curation-drift")
    d.get(f"{base}/v1/docs")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ops tr")) > 30, what="docs rendered")
    shot(d, "16-api-docs")
    # Time to first paint of the gallery, as Chromium reports it.
    d.get(f"{base}/portal/apps/{APP}/gallery")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .tile")) >= 60, what="gallery again")
    paint = d.execute_script("return performance.getEntriesByType('paint').map(e => [e.name, e.startTime])")
    print(f"gallery timings: {timings}; paint: {paint}")
    # Sign out: back to the sign-in page, and the API refuses the old page's calls.
    d.find_element(By.ID, "sign-out").click()
    wait(d, lambda d: d.find_elements(By.ID, "api-key"), what="signed out")
    api.close()


DQ_APP = "portal-dq"
DQ_CLASSES = ["cat", "dog", "horse"]


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (28, 28), (0, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def test_data_quality_page(stack, browser) -> None:  # type: ignore[no-untyped-def]
    """The data-quality page of an app with planted problems: the check's verdicts, duplicate
    groups as thumbnails, keep one (done; refused when the copy carries another label, nothing
    deleted), leaks, the blank image flagged, and a trained version's worst slices."""
    from selenium.webdriver.common.by import By

    d = browser
    base = stack.gateway_url
    key = new_app_key(stack, DQ_APP)
    api = httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"})
    items = datasets.animal_mnist(10, seed=23, classes=DQ_CLASSES)
    # metadata to slice by: a camera, and a site whose one value is hostile and long (shown escaped, cut)
    sites = (HOSTILE + " by the loading dock", "south")
    inputs = [
        {"id": i, "base64": b64(data), "concepts": [c], "metadata": {"camera": "AB"[k % 2], "site": sites[k // 2 % 2]}} for k, (i, c, data) in enumerate(items)
    ]
    src, other = items[0], items[10]
    inputs.append({"id": "copy-a", "base64": b64(src[2]), "concepts": [src[1]]})  # the same label: may go
    inputs.append({"id": "copy-b", "base64": b64(other[2]), "concepts": [HOSTILE]})  # another label: refused
    inputs.append({"id": "blank", "base64": b64(_blank_png()), "concepts": []})
    assert api.post(f"/v1/apps/{DQ_APP}/inputs", json={"inputs": inputs}).status_code == 201
    eventually(lambda: api.get(f"/v1/apps/{DQ_APP}/index").json()["indexed_count"] >= len(inputs), 180, what="indexed")
    ds = api.post(f"/v1/apps/{DQ_APP}/datasets", json={"id": "main", "concepts": DQ_CLASSES, "split": {"train_fraction": 0.5, "validation_fraction": 0.5}})
    assert ds.status_code == 201, ds.text
    assert ds.json()["health"]["status"] in ("pass", "warn", "fail"), ds.json()["health"]  # checked when frozen
    assert api.post(f"/v1/apps/{DQ_APP}/models", json={"id": "animals", "concepts": DQ_CLASSES}).status_code == 201
    job = api.post(f"/v1/apps/{DQ_APP}/models/animals/train", json={"dataset_id": "main"}).json()
    done = eventually(
        lambda: (j := api.get(f"/v1/apps/{DQ_APP}/jobs/{job['id']}").json())["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED") and j,
        180,
        what="trained",
    )
    assert done["state"] == "JOB_STATE_SUCCEEDED", done

    sign_in(d, base, key)
    d.find_element(By.ID, "nav-quality").click()
    wait(d, lambda d: d.find_elements(By.ID, "health-idle"), what="quality page")
    d.find_element(By.ID, "health-run").click()
    verdict = wait(d, lambda d: d.find_elements(By.ID, "health-verdict"), 300, what="health check")[0].text
    assert verdict.startswith(("Fails", "Passes with warnings")) and f"({len(inputs)} inputs checked)" in verdict, verdict
    status = {
        r.get_attribute("data-check"): r.find_element(By.CSS_SELECTOR, ".status").text for r in d.find_elements(By.CSS_SELECTOR, "#health-checks tbody tr")
    }
    assert status["duplicates"] in ("warn", "fail") and status["corrupt_or_blank"] in ("warn", "fail"), status

    def group_with(input_id: str):  # type: ignore[no-untyped-def]
        found = [g for g in d.find_elements(By.CSS_SELECTOR, "form.dup-group") if g.find_elements(By.CSS_SELECTOR, f'.tile[data-id="{input_id}"]')]
        return found[0] if found else None

    g = group_with("copy-a")
    assert g is not None and g.get_attribute("data-kind") == "exact"
    assert {t.get_attribute("data-id") for t in g.find_elements(By.CSS_SELECTOR, ".tile")} == {"copy-a", src[0]}
    thumbs = d.find_elements(By.CSS_SELECTOR, "form.dup-group img")
    wait(d, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in thumbs), what="group thumbnails")
    flagged = {t.get_attribute("data-id"): t.text for t in d.find_elements(By.CSS_SELECTOR, "#flagged-card .tile")}
    assert "blank" in flagged["blank"], flagged  # (one silhouette may be flagged blurry beside the rest)
    leaks = {t.get_attribute("data-id") for t in d.find_elements(By.CSS_SELECTOR, "#leaks-card .tile")}
    assert leaks <= {"copy-a", src[0], "copy-b", other[0]}
    no_alert(d)  # the hostile label is shown escaped
    assert HOSTILE in group_with("copy-b").text
    d.execute_script("arguments[0].scrollIntoView()", d.find_element(By.ID, "duplicates-card"))
    shot(d, "17-data-quality")

    # Keep the source, delete its exact copy.
    g = group_with("copy-a")
    g.find_element(By.CSS_SELECTOR, f'input[name="keep"][value="{src[0]}"]').click()
    g.find_element(By.CSS_SELECTOR, "button.keep-one").click()
    message = wait(d, lambda d: d.find_elements(By.ID, "quality-message"), 300, what="kept one")[0].text
    assert message == f"Kept {src[0]}; deleted its 1 duplicate: copy-a.", message
    assert group_with("copy-a") is None and group_with(src[0]) is None
    assert api.get(f"/v1/apps/{DQ_APP}/inputs/copy-a").status_code == 404
    assert api.get(f"/v1/apps/{DQ_APP}/inputs/{src[0]}").status_code == 200
    shot(d, "18-data-quality-kept-one")
    # The copy with another label: refused either way, nothing deleted.
    group_with("copy-b").find_element(By.CSS_SELECTOR, "button.keep-one").click()
    message = wait(d, lambda d: (m := d.find_elements(By.ID, "quality-message")) and "Nothing deleted" in m[0].text and m[0].text, 300, what="refused")
    assert "lacks labels" in message, message
    assert api.get(f"/v1/apps/{DQ_APP}/inputs/copy-b").status_code == 200
    assert api.get(f"/v1/apps/{DQ_APP}/inputs/{other[0]}").status_code == 200
    assert group_with("copy-b") is not None
    no_alert(d)

    # The trained version's worst slices.
    d.find_element(By.CSS_SELECTOR, '#slices-form input[name="min_size"]').clear()
    d.find_element(By.CSS_SELECTOR, '#slices-form input[name="min_size"]').send_keys("3")
    d.find_element(By.ID, "slices-run").click()
    summary = wait(d, lambda d: d.find_elements(By.ID, "slices-summary"), 120, what="worst slices")[0].text
    assert summary.startswith(f"animals version {done['version']} on validation: accuracy"), summary
    assert "Ranked by Brier score" in summary, summary
    rows = d.find_elements(By.CSS_SELECTOR, "#slices tbody tr")
    assert rows and all(
        r.find_element(By.CSS_SELECTOR, "th").text.startswith(("concept", "embedding cluster", "brightness", "contrast", "blur", "camera", "site"))
        for r in rows
    )
    assert "Metadata keys chosen: camera, site." in summary, summary
    assert d.find_elements(By.ID, "health-verdict")  # the check stays on the page
    d.execute_script("arguments[0].scrollIntoView()", d.find_element(By.ID, "slices-card"))
    shot(d, "19-data-quality-slices")
    # ranked by accuracy instead: the selector keeps the choice
    d.find_element(By.CSS_SELECTOR, '#slices-rank-by option[value="accuracy"]').click()
    d.find_element(By.ID, "slices-run").click()
    summary = wait(d, lambda d: [e for e in d.find_elements(By.ID, "slices-summary") if "Ranked by accuracy" in e.text], 120, what="slices by accuracy")[0].text
    assert d.find_element(By.CSS_SELECTOR, '#slices-rank-by option[value="accuracy"]').is_selected(), summary
    d.execute_script("arguments[0].scrollIntoView()", d.find_element(By.ID, "slices-card"))
    shot(d, "19-data-quality-slices-by-accuracy")
    # slices of at least 6 inputs (about 15 scored): the quality quartiles drop out, the metadata
    # slices stay (each key has a value carried by 8 or more); the hostile site value is text, cut
    d.find_element(By.CSS_SELECTOR, '#slices-form input[name="min_size"]').clear()
    d.find_element(By.CSS_SELECTOR, '#slices-form input[name="min_size"]').send_keys("6")
    d.find_element(By.ID, "slices-run").click()
    wait(d, lambda d: "min_size=6" in d.current_url and d.find_elements(By.ID, "slices-summary"), 120, what="slices of 6 or more")
    names = [r.find_element(By.CSS_SELECTOR, "th").text for r in d.find_elements(By.CSS_SELECTOR, "#slices tbody tr")]
    assert any(n.startswith("camera = ") for n in names) and any(n.startswith("site = ") for n in names), names
    hostile = [n for n in names if n.startswith("site = <")]
    assert all(n == "site = " + HOSTILE[:39] + "…" for n in hostile), hostile
    no_alert(d)
    d.execute_script("arguments[0].scrollIntoView()", d.find_element(By.ID, "slices-card"))
    shot(d, "19-data-quality-slices-by-metadata")
    # The histogram of a stored quality metric: the black blank image alone in the lowest
    # brightness bucket (the animals are far brighter), each bar a link to the gallery's filter.
    from selenium.webdriver.support.ui import Select

    Select(d.find_element(By.ID, "histogram-metric")).select_by_visible_text("brightness")
    d.find_element(By.ID, "histogram-show").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#histogram rect.bar"), 60, what="histogram")
    bars = d.find_elements(By.CSS_SELECTOR, "#histogram rect.bar")
    counts = [int(b.find_element(By.TAG_NAME, "title").get_attribute("textContent").rsplit(": ", 1)[1]) for b in bars]
    assert len(bars) == 20 and sum(counts) == len(inputs) - 1 and counts[0] == 1, counts  # copy-a was deleted above
    link = d.execute_script("return arguments[0].getAttribute('href')", d.find_element(By.CSS_SELECTOR, "#histogram a"))  # an SVG link's .href is no string
    assert "quality_metric=brightness" in link and "quality_min=0.0" in link, link
    summary = d.find_element(By.ID, "histogram-summary").text
    assert summary.startswith("brightness from 0 to ") and f"over {len(inputs) - 1} inputs" in summary, summary
    d.execute_script("arguments[0].scrollIntoView()", d.find_element(By.ID, "histogram-card"))
    shot(d, "20-data-quality-histogram")
    # The most unusual inputs and the most representative of each concept: the blank image
    # (unlabeled, unlike any animal) among the most unusual; each concept's representatives its own.
    d.find_element(By.ID, "uniqueness-run").click()
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#uniqueness-inputs .tile"), 120, what="uniqueness")
    unusual = [t.get_attribute("data-id") for t in d.find_elements(By.CSS_SELECTOR, "#uniqueness-inputs .tile")]
    # measured through the stack: blank 0.763, the next (an animal) 0.443
    assert len(unusual) == 12 and unusual[0] == "blank", unusual
    concept_of = {i: c for i, c, _ in items}
    rows = d.find_elements(By.CSS_SELECTOR, ".rep-row")
    reps = {r.get_attribute("data-concept"): [t.get_attribute("data-id") for t in r.find_elements(By.CSS_SELECTOR, ".tile")] for r in rows}
    assert set(reps) == {*DQ_CLASSES, HOSTILE}, reps
    assert all(len(reps[c]) == 4 and all(concept_of.get(i) == c for i in reps[c]) for c in DQ_CLASSES), reps
    thumbs = d.find_elements(By.CSS_SELECTOR, "#uniqueness-card img")
    wait(d, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in thumbs), what="uniqueness thumbnails")
    no_alert(d)
    d.execute_script("arguments[0].scrollIntoView()", d.find_element(By.ID, "uniqueness-card"))
    shot(d, "20-data-quality-uniqueness")
    d.get(f"{base}/portal/apps/{DQ_APP}/quality?dataset=main")  # the check recorded with the version
    assert "was checked when frozen" in wait(d, lambda d: d.find_elements(By.ID, "health-recorded"), what="recorded check")[0].text

    # The embedding map: every indexed input a dot, coloured by concept (the hostile one as
    # text), then by the trained version's prediction and by the dataset's splits; a dot opens
    # its input.
    from selenium.webdriver.support.ui import Select

    indexed = api.get(f"/v1/apps/{DQ_APP}/index").json()["indexed_count"]
    d.find_element(By.ID, "nav-map").click()
    wait(d, lambda d: d.find_element(By.ID, "map-card").get_attribute("data-ready") == "1", 120, what="map drawn")
    assert len(d.find_elements(By.CSS_SELECTOR, "#map a.pt")) == indexed
    legend = {li.get_attribute("data-label") for li in d.find_elements(By.CSS_SELECTOR, "#map-legend li")}
    assert legend == {*DQ_CLASSES, HOSTILE, "unlabeled"}, legend
    no_alert(d)
    shot(d, "20-map-by-concept")
    Select(d.find_element(By.ID, "map-color")).select_by_value("prediction")
    d.find_element(By.ID, "map-model").send_keys("animals")
    d.find_element(By.ID, "map-show").click()
    wait(d, lambda d: "color=prediction" in d.current_url and d.find_element(By.ID, "map-card").get_attribute("data-ready") == "1", 120, what="by prediction")
    legend = {li.get_attribute("data-label") for li in d.find_elements(By.CSS_SELECTOR, "#map-legend li")}
    assert legend <= set(DQ_CLASSES) and len(legend) >= 2, legend
    assert f"predictions of animals v{done['version']} (scored)" in d.find_element(By.ID, "map-state").text
    shot(d, "21-map-by-prediction")
    d.get(f"{base}/portal/apps/{DQ_APP}/map?color=split&dataset=main")
    wait(d, lambda d: d.find_element(By.ID, "map-card").get_attribute("data-ready") == "1", 120, what="by split")
    legend = {li.get_attribute("data-label") for li in d.find_elements(By.CSS_SELECTOR, "#map-legend li")}
    assert {"train", "validation", "not in the dataset"} <= legend, legend
    shot(d, "22-map-by-split")
    first = d.find_elements(By.CSS_SELECTOR, "#map a.pt")[0]
    target = first.get_attribute("data-id")
    d.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", first)
    wait(d, lambda d: d.current_url.endswith(f"/inputs/{target}"), what="a dot opens its input")
    # Why the model predicts what it does on a photo: overlays and the nearest labeled examples.
    photo = {"id": "chelsea", "base64": b64(datasets.sample_photo("chelsea"))}
    assert api.post(f"/v1/apps/{DQ_APP}/inputs", json={"inputs": [photo]}).status_code == 201
    eventually(lambda: api.get(f"/v1/apps/{DQ_APP}/inputs/chelsea").status_code == 200, 60, what="stored")
    d.get(f"{base}/portal/apps/{DQ_APP}/inputs/chelsea")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, '#explain-model option[value="animals"]'), what="models listed")
    d.find_element(By.ID, "explain-run").click()
    rows = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#explanation .explain-row"), 120, what="explanation")
    assert len(rows) == 3 and {r.get_attribute("data-concept") for r in rows} == set(DQ_CLASSES)
    overlays = d.find_elements(By.CSS_SELECTOR, "#explanation img.overlay")
    wait(d, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in overlays), what="overlays drawn")
    sizes = [d.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", i) for i in overlays]
    assert all(abs(w / h - 451 / 300) < 0.01 for w, h in sizes), sizes  # the photo's aspect
    for r in rows:  # every evidence tile is a labeled example of the row's concept
        captions = [t.find_element(By.CSS_SELECTOR, ".concepts").text for t in r.find_elements(By.CSS_SELECTOR, ".tile")]
        assert captions and all(r.get_attribute("data-concept") in c.split(", ") for c in captions), captions
    thumbs = d.find_elements(By.CSS_SELECTOR, "#explanation .tile img")
    wait(d, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in thumbs), what="evidence thumbnails")
    assert d.find_element(By.ID, "explain-state").text.startswith(f"animals v{done['version']}")
    d.execute_script("arguments[0].scrollIntoView(); window.scrollBy(0, -60)", d.find_element(By.ID, "explain-card"))  # below the sticky bar
    shot(d, "20-input-explanation")
    d.find_element(By.ID, "sign-out").click()
    api.close()


PHONE_APP = "portal-phone"


def test_a_phone_heic_is_shown_upright_on_its_input_page(stack, browser) -> None:  # type: ignore[no-untyped-def]
    """What a person sees of an iPhone photo: a portrait HEIC stored sideways (rotation box and
    EXIF tag 6) shows upright, as a picture the browser can draw (Chromium cannot draw HEIC)."""

    d = browser
    base = stack.gateway_url
    key = new_app_key(stack, PHONE_APP)
    api = httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"})
    from skimage import data as skdata

    cat = Image.fromarray(skdata.chelsea()).resize((900, 600))  # landscape, as the camera saw it
    exif = Image.Exif()
    exif[0x0112] = 6
    heic = io.BytesIO()
    cat.transpose(Image.Transpose.ROTATE_90).save(heic, "HEIF", quality=70, exif=exif.tobytes(), enc_params={"preset": "ultrafast"})
    r = api.post(f"/v1/apps/{PHONE_APP}/inputs", files=[("file", ("IMG_0001.HEIC", heic.getvalue(), "image/heic"))])
    assert r.status_code in (200, 201) and not r.json().get("failures"), r.text
    input_id = r.json()["input_ids"][0]

    sign_in(d, base, key)
    d.get(f"{base}/portal/apps/{PHONE_APP}/inputs/{input_id}")
    drawn = "const i = document.getElementById('full-image'); return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null"
    size = wait(d, lambda d: d.execute_script(drawn), what="the photo drawn")
    shot(d, "phone-heic-input-page")
    assert size == [900, 600], size  # upright: the camera's landscape frame, drawn by the browser
