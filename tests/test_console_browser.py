"""The console at `/` driven in headless Chromium (Debian's chromium + chromium-driver, never a download)
against a real stack: gunicorn with two tenants and a worker serving the training and inference queues.

One module, one stack, one browser, and its trainings shared by the tests in file order: tenant A is refused
an unknown ticker with suggestions, watches the parent train live (phases in order, bars that never go back,
duration and epoch moving without a reload), reads its loss chart and log lines (none of tenant B's),
cancels a running training, retries a failed prediction, opens a second version that is not the champion,
compares the versions, opens ten finished jobs without adding one, and reads a job at a 390 px phone width.
Screenshots of each view go to var/screenshots/ (git-ignored) for the README.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from stockq.settings import Settings
from tests.procs import FAST_TRAINING, Proc, free_port, start_gunicorn, start_redis, start_worker, wait_until
from webapp import create_app
from webapp.console import render_markdown
from workers.jobs import JobRegistry

A, B = "alice-secret-0123456789", "bob-secret-0123456789"
KEYS = f"alice:{A},bob:{B}"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
STATIC = Path(__file__).resolve().parents[1] / "webapp" / "static"
# Stored before the stack starts: the parent learns from every stored ticker (about a second an epoch).
PANEL = ["^GSPC", "AAPL", "KO"]
DIALOG = "document.getElementById('key-dialog')"


# ------------------------------------------------------------------------------ in process, no browser


class _Answering(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)  # Flower behind basic auth still answers
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def web_ui() -> Iterator[str]:
    """A local web server standing in for a running Flower: it answers every request."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def no_limits(**values: Any) -> Settings:
    return Settings(rate_limit="", rate_limit_train="", rate_limit_predict="", rate_limit_agent="", **values)


def test_the_page_and_its_modules_are_public_local_and_nothing_else_opened(
    tmp_path: Path, web_ui: str
) -> None:
    # Flower answers; the MLflow UI is configured at a port where nothing listens: no link to it.
    settings = no_limits(var_dir=tmp_path, api_keys=KEYS, flower_ui_url=web_ui + "/",
                         mlflow_ui_url=f"http://127.0.0.1:{free_port()}")  # fmt: skip
    client = create_app(settings).test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert f'href="{web_ui}"' in html and ">MLflow<" not in html
    assets = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(?!data:)([^"]+)"', html)
    assert sorted(assets) == ["/static/console.css", "/static/js/main.js"]
    # Every module the entry imports is served from here; nothing names another origin (no CDN).
    modules = sorted(p.name for p in (STATIC / "js").glob("*.js"))
    for name in modules:
        text = (
            client.get(f"/static/js/{name}").get_data(as_text=True).replace("http://www.w3.org/2000/svg", "")
        )
        assert "http://" not in text and "https://" not in text, name  # the SVG namespace is no address
        for imported in re.findall(r'from "\./([\w.]+)"', text):
            assert imported in modules, (name, imported)
    for path in ("/jobs", "/console/jobs/abcd", "/models", "/tickers", "/jobs/abcd/events"):
        assert client.get(path).status_code == 401, path
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "/" not in paths and "/console/jobs/{job_id}" in paths  # the page is no API operation


def test_reports_are_rendered_and_sanitised() -> None:
    html = render_markdown(
        "# AAPL\n\n| p10 | p50 |\n|---|---|\n| 1 | 2 |\n\n**bullish** <script>alert(1)</script>"
        '\n\n<img src=x onerror="alert(1)"> [x](javascript:alert(1)) [ok](https://example.org)'
    )
    assert "<h1>AAPL</h1>" in html and "<table>" in html and "<strong>bullish</strong>" in html
    # Raw HTML comes out as text, a javascript: link as no link.
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html
    assert 'href="https://example.org"' in html and 'rel="noopener noreferrer"' in html


def test_a_job_s_view_renders_its_report_links_an_answering_flower_and_is_the_owner_s_only(
    tmp_path: Path, web_ui: str
) -> None:
    redis_proc = start_redis(port := free_port(), tmp_path / "redis")  # its own: no shared DB number
    try:
        settings = no_limits(redis_url=f"redis://127.0.0.1:{port}/0", var_dir=tmp_path, api_keys=KEYS,
                             mlflow_ui_url="", flower_ui_url=web_ui)  # fmt: skip
        jobs = JobRegistry(redis.Redis.from_url(settings.redis_url), 60)
        job = jobs.create("analyze", {"ticker": "AAPL"}, "stockq.analyze", owner="alice")
        report = "## AAPL\n\n**neutral** <script>alert(1)</script>"
        assert jobs.succeed(job.id, {"report_markdown": report, "stance": "neutral"}, attempt=1)
        client = create_app(settings).test_client()
        view = client.get(f"/console/jobs/{job.id}", headers={"Authorization": f"Bearer {A}"})
        assert view.status_code == 200, view.get_json()
        body = view.get_json()
        assert body["report_html"].startswith("<h2>AAPL</h2>") and "<script" not in body["report_html"]
        assert body["flower_url"] == f"{web_ui}/task/{job.id}"
        assert body["mlflow_url"] is None  # configured empty: no link
        other = client.get(f"/console/jobs/{job.id}", headers={"Authorization": f"Bearer {B}"})
        assert other.status_code == 404 and other.get_json()["error"]["code"] == "job_not_found"
    finally:
        redis_proc.stop()


# ------------------------------------------------------------------------------------- in Chromium


def store_panel(settings: Settings) -> None:
    from ml.data import make_source
    from ml.features.pipeline import ingest
    from ml.features.store import FeatureStore

    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    ingest(PANEL, source=make_source("bundled", settings.var_path), store=store)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    procs: list[Proc] = [start_redis(port, tmp / "redis")]
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0", var_dir=tmp / "var", data_source="bundled", api_keys=KEYS
    )
    settings.var_path.mkdir(parents=True, exist_ok=True)
    store_panel(settings)
    api_port = free_port()
    try:
        # Both start at once (a cold start takes a minute on a loaded machine); one worker serves both
        # queues, one job at a time: the tests run one job after another.
        with ThreadPoolExecutor(2) as pool:
            starting = [
                pool.submit(start_worker, settings, "training,inference", "worker", **FAST_TRAINING),
                # Its own metrics directory: gunicorn empties it at start, and this process has one too.
                pool.submit(start_gunicorn, settings, api_port, PROMETHEUS_MULTIPROC_DIR=str(tmp / "prom")),
            ]
            for future in starting:
                procs.append(future.result())
        yield {"base": f"http://127.0.0.1:{api_port}", "procs": procs, "settings": settings}
    finally:
        with ThreadPoolExecutor(2) as pool:  # each waits for its own warm shutdown
            list(pool.map(Proc.stop, procs[1:]))
        procs[0].stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (make test installs them as root)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's errors, read at the end
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never fetches a browser or driver
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def screenshot(driver: Any, name: str, element_id: str | None = None) -> Path:
    """The whole page, or one element, beyond the viewport (DevTools' capture)."""
    if element_id is None:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    else:
        box = "const r = arguments[0].getBoundingClientRect(); return [r.x, r.y + scrollY, r.width, r.height]"
        x, y, width, height = js(driver, box, driver.find_element("id", element_id))
        clip = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    path = SHOTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def call(stack: dict[str, Any], method: str, path: str, key: str = A, **kw: Any) -> requests.Response:
    return requests.request(method, stack["base"] + path, headers={"Authorization": f"Bearer {key}"},
                            timeout=30, **kw)  # fmt: skip


def record(stack: dict[str, Any], job_id: str, key: str = A) -> dict[str, Any]:
    return call(stack, "GET", f"/status/{job_id}", key).json()


def until_final(stack: dict[str, Any], job_id: str, key: str = A, timeout_s: float = 60) -> dict[str, Any]:
    final = {"succeeded", "failed", "cancelled"}
    return wait_until(
        lambda: (r := record(stack, job_id, key))["status"] in final and r, timeout_s, f"job {job_id}"
    )


def predicted(stack: dict[str, Any], ticker: str, key: str = A) -> dict[str, Any]:
    """A finished prediction by the parent (a job in the tenant's list)."""
    accepted = call(stack, "POST", "/predict-child", key, json={"ticker": ticker, "model": "parent"})
    assert accepted.status_code in {200, 202}, accepted.text
    return until_final(stack, accepted.json()["job_id"], key)


def all_jobs(stack: dict[str, Any], key: str = A) -> list[str]:
    """Every job id the tenant has, over every page of GET /jobs."""
    ids: list[str] = []
    cursor = None
    while True:
        query = {"limit": 200, **({"cursor": cursor} if cursor is not None else {})}
        page = call(stack, "GET", "/jobs", key, params=query).json()
        ids += [j["job_id"] for j in page["jobs"]]
        if (cursor := page["next_cursor"]) is None:
            return ids


def click(driver: Any, selector: str, timeout_s: float = 20) -> None:
    """Clicks the element once it is there (again if the page replaced it meanwhile)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def clicked() -> bool:
        try:
            driver.find_element("css selector", selector).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    wait_until(clicked, timeout_s, selector)


def values(driver: Any, selector: str, key: str | None = None) -> list[str]:
    """Each matching element's data-<key> (None: its text)."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => k ? e.dataset[k] : e.textContent)"
    return js(driver, "const k = arguments[1];" + script, selector, key)


def dialog_open(driver: Any) -> bool:
    return bool(js(driver, f"return {DIALOG}.open"))


def enter_key(driver: Any, key: str) -> None:
    wait_until(lambda: dialog_open(driver), 20, "the key prompt")
    field = driver.find_element("id", "key-input")
    field.clear()
    field.send_keys(key + "\n")  # Enter submits: the prompt works from the keyboard


def fill_training(driver: Any, ticker: str, epochs: int) -> None:
    driver.find_element("css selector", 'input[name="kind"][value="train"]').click()
    for field, value in (("f-ticker", ticker), ("f-epochs", str(epochs))):
        driver.find_element("id", field).clear()
        driver.find_element("id", field).send_keys(value)


def submit(driver: Any) -> str:
    """Submits the form; the submitted job's id (the console opens its detail)."""
    js(driver, "delete document.getElementById('submit-status').dataset.jobId")
    driver.find_element("css selector", '#submit-form button[type="submit"]').click()
    return wait_until(
        lambda: js(driver, "return document.getElementById('submit-status').dataset.jobId"), 20, "a job id"
    )


def detail_status(driver: Any) -> str:
    return js(driver, "return document.getElementById('detail-status').textContent")


# The detail shows the job's record (not only its id, set at once on opening).
OPENED = """const d = document.getElementById('detail');
return d.dataset.jobId === arguments[0]
  && document.getElementById('detail-json').textContent.includes(arguments[0])"""
CHART = """return !document.getElementById('chart').hidden
  && document.querySelector('#chart-svg svg path.median') !== null"""


def open_job(driver: Any, job_id: str) -> None:
    """Opens a job from its row and waits for its record on the detail."""
    click(driver, f'#jobs-table tr[data-job-id="{job_id}"] button')
    wait_until(lambda: js(driver, OPENED, job_id), 20, f"job {job_id}'s detail")


def wait_chart(driver: Any, timeout_s: float = 30) -> None:
    wait_until(lambda: js(driver, CHART), timeout_s, "the forecast chart")


# What the open detail shows, read at once: status, duration, each phase's label and bar.
SAMPLE = """
const items = [...document.querySelectorAll('#phases li')].map(li => {
  const p = li.querySelector('progress');
  return [li.dataset.phase, li.className, li.textContent, p ? p.value : null, p ? p.max : null];
});
return [document.getElementById('detail-status').textContent,
        document.getElementById('detail-duration').textContent, items,
        document.querySelectorAll('#loss-chart circle.pt-loss').length];
"""


RECTS = """return arguments[0].map(id => {
  const r = document.getElementById(id).getBoundingClientRect();
  return [id, r.top, r.bottom, r.left, r.right, r.width * r.height];
});"""


@pytest.mark.slow
def test_an_unknown_ticker_is_refused_with_suggestions_and_the_parent_has_no_strategy(
    stack: dict[str, Any], browser: Any
) -> None:
    browser.get(stack["base"] + "/")
    enter_key(browser, A)  # auth is on: the first call is refused and the prompt asks for a key
    # A prediction before any parent exists fails: retried once the parent is trained (below).
    failing = call(stack, "POST", "/predict-child", json={"ticker": "^GSPC", "model": "parent"})
    stack["failed_job"] = failing.json()["job_id"]
    offered = "return [...document.querySelectorAll('#tickers option')].map(o => o.value)"
    options = wait_until(lambda: js(browser, offered), 20, "the ticker list")
    assert set(PANEL) <= set(options)
    fill_training(browser, "^GSPC", 1)
    assert not browser.find_element("id", "f-strategy").is_displayed()  # the parent takes no strategy
    fill_training(browser, "AAPL", 1)
    assert browser.find_element("id", "f-strategy").is_displayed()
    fill_training(browser, "APPL", 1)
    browser.find_element("css selector", '#submit-form button[type="submit"]').click()
    chips = wait_until(lambda: values(browser, "#submit-suggestions .chip"), 20, "the suggestions")
    assert "AAPL" in chips, chips
    status = browser.find_element("id", "submit-status")
    assert "unknown_ticker" in status.text and status.get_attribute("data-job-id") is None
    browser.find_element("css selector", '#submit-suggestions .chip[data-ticker="AAPL"]').click()
    assert browser.find_element("id", "f-ticker").get_attribute("value") == "AAPL"  # a pick fills it in
    assert until_final(stack, stack["failed_job"])["status"] == "failed"
    assert len(all_jobs(stack)) == 1  # the refused ticker made no job
    screenshot(browser, "console-unknown-ticker.png")


@pytest.mark.slow
def test_a_training_is_followed_live_phase_by_phase_without_a_reload(
    stack: dict[str, Any], browser: Any
) -> None:
    js(browser, "window.notReloaded = true")
    fill_training(browser, "^GSPC", 4)
    job_id = submit(browser)
    samples: list[tuple[str, str, list[list[Any]]]] = []
    shot = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status, duration, items, points = js(browser, SAMPLE)
        if not samples or samples[-1] != (status, duration, items):
            samples.append((status, duration, items))
        if not shot and points >= 2 and status == "running":  # mid-way: a loss curve to show
            screenshot(browser, "console-live-training.png")
            shot = True
        if status in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.1)
    assert samples[-1][0] == "succeeded", samples[-5:]
    assert js(browser, "return window.notReloaded === true")  # every change came without a reload

    # The phases appear in their order and each bar never goes back within its phase.
    order: list[str] = []
    bars: dict[str, list[float]] = {}
    for _, _, items in samples:
        phases = [i[0] for i in items]
        assert phases == order[: len(phases)] or phases[: len(order)] == order, (order, phases)
        order = phases if len(phases) > len(order) else order
        for phase, cls, label, value, _ in items:
            if cls == "current":
                bars.setdefault(phase, []).append(value)
                assert re.match(r"phase \d of \d · ", label), label
    assert order[-2:] == ["select", "refit"], order
    for phase, values in bars.items():
        assert values == sorted(values), (phase, values)
    running = [s for s in samples if s[0] == "running"]
    # The open detail moved on its own: its duration and the epoch it shows.
    assert len({s[1] for s in running}) >= 2, running
    epochs = {i[2] for s in running for i in s[2] if i[1] == "current" and "epoch" in i[2]}
    assert len(epochs) >= 2, epochs
    assert shot
    stack["v1_job"] = job_id


@pytest.mark.slow
def test_the_loss_chart_has_a_point_per_epoch_and_the_log_is_the_job_s_own(
    stack: dict[str, Any], browser: Any
) -> None:
    job_id = stack.get("v1_job") or pytest.skip("needs the first training")
    done = record(stack, job_id)
    losses = done["progress"]["losses"]
    assert [e["phase"] for e in losses] == sorted((e["phase"] for e in losses), key=["select", "refit"].index)
    points = js(browser, "return document.querySelectorAll('#loss-chart circle.pt-loss').length")
    assert points == len([e for e in losses if e["loss"] is not None]) >= 2
    assert js(browser, "return document.querySelectorAll('#loss-chart circle.pt-val').length") == len(
        [e for e in losses if e["val_loss"] is not None]
    )
    wait_chart(browser)
    note = wait_until(lambda: browser.find_element("id", "champion-note").text, 20, "the champion note")
    assert "stockq-parent v1 is the champion" in note, note
    assert "stockq-parent v1" in browser.find_element("id", "forecast-note").text
    screenshot(browser, "console-training-detail.png")

    # Tenant B's job logs too; A's page shows A's job's lines, exactly those, and nothing of B's.
    bobs = predicted(stack, "KO", B)
    assert bobs["status"] == "succeeded", bobs
    assert call(stack, "GET", f"/jobs/{bobs['job_id']}/log", A).status_code == 404
    own = call(stack, "GET", f"/jobs/{job_id}/log").json()["lines"]
    assert own, "the training logged nothing"
    numbers = [str(line["n"]) for line in own]
    wait_until(lambda: values(browser, "#log-lines li", "n") == numbers, 10, f"log lines {numbers}")
    text = browser.find_element("id", "log-lines").text
    assert all(line["message"][:40] in text for line in own)
    assert bobs["job_id"] not in browser.page_source and bobs["job_id"][:8] not in text


@pytest.mark.slow
def test_cancel_stops_a_running_training(stack: dict[str, Any], browser: Any) -> None:
    fill_training(browser, "^GSPC", 200)
    job_id = submit(browser)
    wait_until(lambda: js(browser, SAMPLE)[3] >= 1, 120, "the first epoch on the open detail")
    assert not browser.find_element("id", "retry-job").is_displayed()
    browser.find_element("id", "cancel-job").click()
    wait_until(lambda: detail_status(browser) == "cancelled", 60, "the cancelled status on the detail")
    assert record(stack, job_id)["status"] == "cancelled"
    assert browser.find_element("id", "retry-job").is_displayed()
    assert not browser.find_element("id", "cancel-job").is_displayed()
    outcomes = js(
        browser, "return [...document.querySelectorAll('#attempts li')].map(li => li.dataset.outcome)"
    )
    assert outcomes == ["cancelled"], outcomes
    stack["cancelled_job"] = job_id


@pytest.mark.slow
def test_retry_restarts_a_failed_job(stack: dict[str, Any], browser: Any) -> None:
    job_id = stack.get("failed_job") or pytest.skip("needs the failed prediction")
    if "v1_job" not in stack:
        pytest.skip("needs the parent trained")
    open_job(browser, job_id)
    assert detail_status(browser) == "failed"
    assert "model_not_found" in browser.find_element("id", "detail-error").text
    assert not browser.find_element("id", "cancel-job").is_displayed()
    browser.find_element("id", "retry-job").click()
    wait_until(lambda: detail_status(browser) == "succeeded", 60, "the retried job to succeed on the detail")
    wait_chart(browser)  # drawn from the stored result
    timeline = browser.find_element("id", "attempts").text
    assert "Attempt 1 failed; retried by request as attempt 2" in timeline, timeline
    assert record(stack, job_id)["attempt"] == 2


@pytest.mark.slow
def test_a_non_champion_version_shows_its_own_forecast_and_the_models_compare_it(
    stack: dict[str, Any], browser: Any
) -> None:
    if "v1_job" not in stack:
        pytest.skip("needs the first training")
    from ml.registry.mlflow_registry import ModelRegistry
    from tests.test_evaluate_job import SUMMARY

    # An evaluation without measurable skill: the next version is registered but v1 stays champion.
    unmeasurable = {**SUMMARY["verdict"], "measurable": False, "lo": -0.004}
    unmeasurable["text"] = "no measurable skill over zero+EWMA"
    summary = {k: v for k, v in SUMMARY.items() if k != "calibration"}  # its bands are served as trained
    ModelRegistry(stack["settings"].tracking_uri).record_evaluation({**summary, "verdict": unmeasurable}, {})
    fill_training(browser, "^GSPC", 1)
    job_id = submit(browser)
    wait_until(lambda: detail_status(browser) in {"succeeded", "failed"}, 180, "the second training")
    assert detail_status(browser) == "succeeded", browser.find_element("id", "detail-error").text
    wait_chart(browser)
    note = wait_until(lambda: browser.find_element("id", "champion-note").text, 20, "the champion note")
    assert "stockq-parent v2 is not the champion" in note and "kept champion v1" in note, note
    assert "stockq-parent v2," in browser.find_element("id", "forecast-note").text  # its own, not v1's
    assert record(stack, job_id)["result"]["forecast"]["model"]["version"] == "2"
    stack["v2_job"] = job_id

    browser.find_element("id", "tab-models").click()
    parent = '#models-table tr[data-model="stockq-parent"] button'
    wait_until(lambda: browser.find_elements("css selector", parent), 30, "the parent in the models table")
    click(browser, parent)
    versions = wait_until(lambda: values(browser, "#versions-table tbody tr", "version"), 30, "the versions")
    assert versions == ["2", "1"]
    sides = wait_until(lambda: values(browser, "#compare .side", "version"), 30, "the comparison")
    assert sides == ["2", "1"]  # the candidate beside the champion
    assert "kept champion v1" in browser.find_element("id", "compare").text
    dm = browser.find_element("id", "compare-dm").text
    assert re.search(r"DM -?\d+\.\d\d, p \d\.\d{3} vs zero\+EWMA, champion then v1", dm), dm
    assert js(browser, "return document.querySelectorAll('#skill-chart circle.skill').length") >= 1
    screenshot(browser, "console-models.png")
    screenshot(browser, "console-models-compare.png", "model")
    browser.find_element("id", "tab-jobs").click()


@pytest.mark.slow
def test_opening_ten_finished_jobs_adds_no_job(stack: dict[str, Any], browser: Any) -> None:
    if "v1_job" not in stack:
        pytest.skip("needs the parent trained")
    for ticker in ("^GSPC", "AAPL", "KO", "AAPL", "KO", "^GSPC"):
        done = predicted(stack, ticker)
        assert done["status"] == "succeeded", done
    before = all_jobs(stack)
    assert len(before) >= 10
    js(browser, "document.getElementById('filter-status').dispatchEvent(new Event('change'))")  # refresh now
    wait_until(lambda: len(values(browser, "#jobs-table tbody tr")) == len(before), 20, "every job listed")
    screenshot(browser, "console-jobs.png")
    for job_id in before[:10]:
        open_job(browser, job_id)
        if record(stack, job_id)["status"] == "succeeded":
            wait_chart(browser)  # everything the detail draws is drawn
    js(browser, "document.getElementById('filter-status').dispatchEvent(new Event('change'))")
    time.sleep(1.0)  # one refresh of the list
    assert all_jobs(stack) == before
    assert len(values(browser, "#jobs-table tbody tr")) == len(before)


@pytest.mark.slow
def test_at_phone_width_the_status_and_chart_are_in_view_and_a_wrong_key_shows_nothing(
    stack: dict[str, Any], browser: Any
) -> None:
    job_id = stack.get("v2_job") or pytest.skip("needs the second training")
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        browser.get(stack["base"] + "/")  # the key survives a reload
        open_job(browser, job_id)
        wait_chart(browser)
        wait_until(lambda: browser.find_element("id", "champion-note").text, 20, "the champion note")
        js(browser, "document.getElementById('detail').scrollIntoView()")
        rects = js(browser, RECTS, ["detail-status", "detail-duration", "phases", "chart"])
        for name, top, bottom, left, right, area in rects:
            assert area > 0 and top >= 0 and bottom <= 844 and left >= 0 and right <= 390, (name, rects)
        width = js(browser, "return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] == 390, width
        screenshot(browser, "console-phone.png")

        browser.find_element("id", "change-key").click()
        enter_key(browser, "wrong-secret-0123456789")
        refused = f"return {DIALOG}.open && document.getElementById('key-error').textContent"
        assert "401" in wait_until(lambda: js(browser, refused), 20, "the prompt back after a 401")
        assert job_id not in browser.page_source  # a refused key leaves nothing of the last tenant's
        enter_key(browser, B)
        wait_until(lambda: browser.find_elements("css selector", "#jobs-table tbody tr"), 20, "B's list")
        assert job_id not in browser.page_source
        # No script error on the page all along (refused requests, the 401s and 404s asked for, aside).
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not [m for m in errors if "Failed to load resource" not in m], errors
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
