"""The demo page in a real browser: Voila serves app/demo.ipynb (what `make demo`
serves), Chromium uploads files; and reports/index.html opened from disk.

Chromium (Debian's /usr/bin/chromium) is driven through the Python ``playwright``
package; every request that does not go to 127.0.0.1 (or, for the index, to a local
file) is aborted and recorded, so the tests are local. They skip when Chromium,
playwright or voila are missing, and fail instead under MAMMO_REQUIRE_SHARED=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_preprocess import make_breast

from mammo_utils.demo import MODEL_DIR_ENV, SYNTHETIC_WARNING, evaluation_file
from mammo_utils.model_card import ModelCard

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "app" / "demo.ipynb"
#: Words of notebook 06's developer narration, which the served page must not show.
NARRATION = ("DataSettings", "Which models are available", "trained model(s) offered",
             "The same result as a static picture")
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "reports" / "demo"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check",
]
VOILA = Path(sys.executable).with_name("voila")


def _missing(reason: str):
    if os.environ.get("MAMMO_REQUIRE_SHARED") == "1":
        pytest.fail(f"{reason} (MAMMO_REQUIRE_SHARED=1 makes this a failure)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"voila exited with status {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"voila did not listen on port {port} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")
    if not VOILA.exists():
        _missing(f"voila not found next to {sys.executable}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    return sync_playwright


@pytest.fixture(scope="module")
def synthetic_model_dir(bright_roi_model_dir, synthetic_training_range, tmp_path_factory):
    """The tiny roi model with a card saying it was trained on the synthetic set only,
    and an evaluation whose image level holds a malignant ROC-AUC with its interval."""
    project = tmp_path_factory.mktemp("demo_project")
    model = project / "models" / "run" / "synthetic_roi"
    shutil.copytree(bright_roi_model_dir, model)
    card = ModelCard.load(model)
    card.training_range = synthetic_training_range
    card.save(model)
    interval = {"lower": 0.61, "upper": 0.93, "n_valid": 200}
    image = {"malignant_roc_auc": 0.79, "n_images": 24,
             "bootstrap": {"confidence": 0.95, "intervals": {"malignant_roc_auc": interval}}}
    metrics = evaluation_file(model)
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"protocol": "official synthetic test split, 24 images",
                                   "levels": {"image": image}}))
    return model


@pytest.fixture(scope="module")
def film_pgm(tmp_path_factory) -> Path:
    """A film-scanned style mammogram: an 8-bit PGM."""
    pixels = np.rint(make_breast((1024, 800), seed=3) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("film") / "film_scan_LEFT_CC.pgm"
    path.write_bytes(b"P5\n800 1024\n255\n" + pixels.tobytes())
    return path


@pytest.fixture(scope="module")
def voila_url(sync_playwright, synthetic_model_dir, tmp_path_factory):
    """Voila serving the app with the synthetic-trained model, stopped by process group."""
    port = _free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    env = {**os.environ, MODEL_DIR_ENV: str(synthetic_model_dir)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(VOILA), str(NOTEBOOK), "--no-browser", f"--port={port}",
             "--Voila.ip=127.0.0.1",
             "--Voila.tornado_settings={'websocket_max_message_size': 209715200}"],
            cwd=NOTEBOOK.parent, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture()
def page(sync_playwright, voila_url):
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.route(
            "**/*",
            lambda route: route.continue_()
            if route.request.url.startswith("http://127.0.0.1") else route.abort(),
        )
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(voila_url)
        page.wait_for_selector(".mammo-upload")
        page.wait_for_selector(".mammo-label h2")
        yield page
        browser.close()


def _upload(page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(".mammo-upload")
    chooser.value.set_files(str(path))


def _cli_confidence(model_dir: Path, path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "mammo_utils", "predict", str(path), "--model", str(model_dir),
         "--json"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def _screenshot_app(page, path: Path) -> None:
    """Screenshot the whole app, however tall.

    Voila scrolls an inner panel, not the document, so a full-page screenshot stops at
    the viewport and everything below it comes out blank. The viewport is grown to the
    tallest scrolled content for the shot, then restored.
    """
    size = page.viewport_size
    height = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": size["width"], "height": int(height)})
    page.wait_for_timeout(200)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".mammo-app").screenshot(path=str(path))
    page.set_viewport_size(size)


def _box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def _assert_phone_layout(page, classes: tuple[str, ...], width: int) -> None:
    """At ``width`` px every part of the result shows inside the screen, stacked."""
    needed = [".mammo-disclaimer", ".mammo-upload", ".mammo-heatmap-toggle", ".mammo-preview",
              ".mammo-synthetic-warning", ".mammo-label h2", ".mammo-confidence",
              ".mammo-performance", ".mammo-description", ".mammo-metadata table"]
    needed += [f'.mammo-prob-row[data-class="{name}"]' for name in classes]
    for selector in needed:
        locator = page.locator(selector)
        assert locator.count() == 1 and locator.is_visible(), selector
        box = locator.bounding_box()
        assert box["width"] > 0 and box["height"] > 0, selector
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (selector, box)
    for name in classes:
        row = page.locator(f'.mammo-prob-row[data-class="{name}"]')
        assert row.inner_text().replace("\n", "").startswith(name)
        assert row.locator(".mammo-prob-track").bounding_box()["width"] >= 40, name
    overflow = page.evaluate(
        """width => {
            const app = document.querySelector('.mammo-app');
            const wide = [app, ...app.querySelectorAll('*')].filter(
                e => e.getBoundingClientRect().right > width + 1
                     || e.scrollWidth > e.clientWidth + 1);
            return {page: document.documentElement.scrollWidth,
                    wide: wide.map(e => e.tagName + '.' + e.className).slice(0, 5)};
        }""",
        width,
    )
    assert overflow["page"] <= width + 1, f"page is {overflow['page']} px wide at {width} px"
    assert overflow["wide"] == [], f"elements overflow a {width} px screen: {overflow['wide']}"
    assert _box(page, ".mammo-verdict")["y"] >= _box(page, ".mammo-preview")["y"] + _box(
        page, ".mammo-preview")["height"], "the result should sit below the image on a phone"


def _wait_for_source(page, name: str) -> None:
    page.wait_for_function(
        "name => document.querySelector('.mammo-source') &&"
        " document.querySelector('.mammo-source').innerText.includes(name)",
        arg=name,
    )


def _above(page, upper: str, lower: str) -> bool:
    top = _box(page, upper)
    return top["y"] + top["height"] <= _box(page, lower)["y"] + 1


def test_app_alone_synthetic_and_domain_warnings_bad_file_and_phone_width(
        page, real_mammograms, synthetic_model_dir, film_pgm, tmp_path):
    classes = tuple(ModelCard.load(synthetic_model_dir).classes)
    content = page.content()
    for phrase in NARRATION:
        assert phrase not in content, f"developer narration on the served page: {phrase}"
    assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.is_visible(".mammo-disclaimer") and page.is_visible(".mammo-model")

    dicom = next(path for path in real_mammograms if path.parent.name == "sfm-malign-0")
    expected = _cli_confidence(synthetic_model_dir, dicom)
    _upload(page, dicom)
    _wait_for_source(page, dicom.name)
    label = page.inner_text(".mammo-label").strip()
    assert label in classes and label == expected["label"]
    assert f"{100 * expected['confidence']:.1f} %" in page.inner_text(".mammo-confidence")
    assert page.is_visible(".mammo-synthetic-warning")
    assert page.inner_text(".mammo-synthetic-warning").strip() == SYNTHETIC_WARNING
    assert _above(page, ".mammo-synthetic-warning", ".mammo-label h2")
    performance = page.inner_text(".mammo-performance")
    assert "image-level malignant-vs-rest ROC-AUC 0.79 (95 % interval 0.61 to 0.93)" in (
        performance)
    assert "Trained on: synthetic" in page.inner_text(".mammo-trained-on")
    # A scanned film is far larger than any synthetic image: named, as `mammo predict` does.
    assert expected["out_of_domain"]
    for difference in expected["out_of_domain"]:
        assert difference in page.inner_text(".mammo-domain-warning")
    assert expected["metadata"]["view"] in page.inner_text(".mammo-metadata")
    assert "P_00" not in page.content()
    verdict, preview = _box(page, ".mammo-verdict"), _box(page, ".mammo-preview")
    assert verdict["x"] >= preview["x"] + preview["width"], "desktop: result beside the image"
    _screenshot_app(page, SCREENSHOTS / "demo_desktop.png")

    fake = tmp_path / "not_a_mammogram.dcm"
    fake.write_text("plain text, renamed to .dcm\n" * 40)
    _upload(page, fake)
    page.wait_for_selector(".mammo-error .mammo-error-box")
    assert page.locator(".mammo-error-box").count() == 1
    error = page.inner_text(".mammo-error").strip()
    assert "not_a_mammogram.dcm" in error and "\n" not in error
    assert "Traceback" not in page.content()

    _upload(page, film_pgm)
    _wait_for_source(page, film_pgm.name)
    assert not page.is_visible(".mammo-error .mammo-error-box")
    domain = page.inner_text(".mammo-domain-warning")
    assert "PGM file" in domain and "only on DICOM files" in domain
    assert "8-bit pixels" in domain
    assert _above(page, ".mammo-domain-warning", ".mammo-label h2")
    _screenshot_app(page, SCREENSHOTS / "demo_desktop_film_pgm.png")

    _upload(page, dicom)
    _wait_for_source(page, dicom.name)
    assert page.inner_text(".mammo-label").strip() == expected["label"]
    assert page.is_visible(".mammo-synthetic-warning")

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    _assert_phone_layout(page, classes, 390)
    _screenshot_app(page, SCREENSHOTS / "demo_phone.png")


@pytest.mark.slow
def test_report_index_is_static_and_shows_its_thumbnails(sync_playwright, smoke_report):
    """reports/index.html of the smoke run, opened from disk: every request it makes is
    for a local file, and every thumbnail loads."""
    _, project = smoke_report
    index = project / "reports" / "index.html"
    requests: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.route("**/*", lambda route: route.continue_()
                      if route.request.url.startswith("file://") else route.abort())
        page = context.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        thumbnails = page.locator("img.thumbnail")
        assert thumbnails.count() >= 2
        widths = page.evaluate(
            "Array.from(document.querySelectorAll('img.thumbnail'), i => i.naturalWidth)")
        assert all(width > 0 for width in widths), widths
        assert page.locator("table.comparison tr").count() >= 2
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)
        browser.close()
    external = [url for url in requests if not url.startswith("file://")]
    assert requests and external == []
