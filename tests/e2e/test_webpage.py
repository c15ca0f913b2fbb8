"""The web page end to end in headless Chromium (Debian's chromium + chromedriver, Selenium):
upload an image, drag a box on the canvas, type the object, tick "explain", submit — first
without the token (the page shows the server's 401), then with it — and read the three
verdicts from the DOM; they must equal the Predictor's own answer for the box the page sent.

    make browser && .venv/bin/python -m pytest tests/e2e/test_webpage.py -q
"""

from __future__ import annotations

import re
import shutil

import pytest

pytest.importorskip("fastapi")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")

from scenefit.core.records import is_synthetic  # noqa: E402
from scenefit.serve.app import create_app  # noqa: E402
from scenefit.serve.config import ServeConfig  # noqa: E402
from scenefit.serve.openai_server import serve_in_thread  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="Debian's chromium and chromedriver are not installed (run `make browser`)"),
]
TOKEN = "page-token"
CRITERIA = ("location", "size", "co_occurrence")


@pytest.fixture(scope="module")
def page_server(predictor):
    app = create_app(predictor, ServeConfig(max_wait_ms=5, request_timeout_s=300), token=TOKEN,
                     synthetic=is_synthetic(*predictor.students.values()))
    with serve_in_thread(app) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_draw_submit_and_read_the_verdicts(page_server, browser, predictor, items, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    image, obj, box = items[2]
    path = tmp_path / "scene.png"
    image.save(path)
    wait = WebDriverWait(browser, 240)
    browser.get(page_server + "/")
    assert "scenefit" in browser.title
    notice = browser.find_element(By.ID, "notice")
    wait.until(lambda d: browser.execute_script("return document.readyState") == "complete")

    browser.find_element(By.ID, "image-input").send_keys(str(path))
    canvas = browser.find_element(By.ID, "canvas")
    wait.until(lambda d: int(canvas.get_attribute("width")) != 480)  # resized to the loaded image
    width, height = int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))
    scale = width / image.width

    # Drag from the box's top-left to its bottom-right corner (offsets are from the canvas centre).
    x0, y0, x1, y1 = (v * scale for v in box)
    ActionChains(browser).move_to_element_with_offset(canvas, int(x0 - width / 2), int(y0 - height / 2)) \
        .click_and_hold().move_by_offset(int((x1 - x0) / 2), int((y1 - y0) / 2)) \
        .move_by_offset(int((x1 - x0) / 2), int((y1 - y0) / 2)).release().perform()
    text = browser.find_element(By.ID, "box-text").text
    match = re.search(r"Box: (\d+), (\d+), (\d+), (\d+)", text)
    assert match, text
    drawn = tuple(int(v) for v in match.groups())
    assert all(abs(a - b) <= 2 for a, b in zip(drawn, box)), (drawn, box)

    browser.find_element(By.ID, "object-input").send_keys(obj)
    browser.find_element(By.ID, "explain-input").click()

    # Without the token the page shows the server's refusal, naming the problem.
    browser.find_element(By.ID, "submit").click()
    error = browser.find_element(By.ID, "error")
    wait.until(EC.visibility_of(error))
    assert "401" in error.text and "missing_token" in error.text

    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    browser.find_element(By.ID, "token-input").send_keys(TOKEN)
    browser.find_element(By.ID, "submit").click()
    final = browser.find_element(By.ID, "final")
    wait.until(lambda d: final.text.strip() != "" and browser.find_element(By.ID, "results").is_displayed())
    assert not error.is_displayed()

    seen = {}
    for c in CRITERIA:
        card = browser.find_element(By.ID, f"verdict-{c}")
        prob = re.search(r"p = ([0-9.]+)", card.find_element(By.CLASS_NAME, "probability").text)
        seen[c] = {"label": card.find_element(By.CLASS_NAME, "label").text, "probability": float(prob.group(1)) if prob else None,
                   "analysis": card.find_element(By.CLASS_NAME, "analysis").text}

    want = predictor.predict([(image, obj, drawn)], explain=True)[0].to_json()
    for c in CRITERIA:
        assert seen[c]["label"] == want["criteria"][c]["label"], (c, seen[c], want["criteria"][c])
        assert abs(seen[c]["probability"] - want["criteria"][c]["probability"]) < 2e-3
        v = want["criteria"][c]
        assert seen[c]["analysis"].startswith(v["analysis"] or "")
        if not v["analysis"] and v["analysis_status"] not in ("ok", "not_requested"):  # a missing one says why
            assert f"could not be read: {v['analysis_status']}" in seen[c]["analysis"]
        if v.get("text_agrees") is False:
            assert "the explanation's own label" in seen[c]["analysis"]
    assert final.text == want["final"]
    assert notice.is_displayed() == is_synthetic(*predictor.students.values())
