"""The reports in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium). `make test-browser` installs the browser when it is missing and runs this tier; without a
browser these tests fail, they do not skip.

SENTITUNE_SCREENSHOTS=DIR also saves the screenshots there (README's pictures come from
`SENTITUNE_SCREENSHOTS=docs/images SENTITUNE_REPORT_RUN=demo/run make test-browser`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import HOSTILE, cli, serving

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1200, 1500


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.fail("no Chromium: `make test-browser` installs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The top of the page as PNG in the test's folder (and in $SENTITUNE_SCREENSHOTS when set)."""
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("SENTITUNE_SCREENSHOTS"):
        target = Path(os.environ["SENTITUNE_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def check_rendered(driver, page: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(page.resolve().as_uri())
    assert console_errors(driver) == []
    figures = driver.find_elements(By.CSS_SELECTOR, "[data-figure]")
    assert figures
    for element in figures:
        size = element.size
        assert size["width"] > 0 and size["height"] > 0, element.get_attribute("data-figure")


def shown(driver, key: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-metric="{key}"]').text


def test_a_runs_report_renders_every_figure_and_shows_metrics_json(browser, trained_run, tmp_path):
    run = Path(os.environ.get("SENTITUNE_REPORT_RUN") or trained_run)
    check_rendered(browser, run / "report.html")
    metrics = json.loads((run / "metrics.json").read_text())
    split = "test" if "test" in metrics else "val"
    for key in ("accuracy", "macro_f1", "macro_recall", "loss"):
        assert shown(browser, key) == f"{metrics[split][key]:.4f}"
    screenshot(browser, tmp_path, "report.png")


def test_hostile_posts_are_shown_as_text_and_never_run(browser, run_copy, tmp_path, capsys):
    frame = pd.DataFrame({"text": [*HOSTILE, "fine"], "label": ["positive", "negative", "neutral"]})
    frame.to_csv(tmp_path / "posts.csv", index=False)
    out = tmp_path / "eval"
    assert cli(capsys, "evaluate", run_copy, "--data", tmp_path / "posts.csv", "--output-dir", out)[0] == 0
    check_rendered(browser, out / "report.html")
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    body = browser.find_element("tag name", "body").text
    for text in HOSTILE:
        assert text in body  # the markup appears as the characters the post holds
    assert shown(browser, "accuracy") == f"{json.loads((out / 'metrics.json').read_text())['accuracy']:.4f}"


def test_prepares_report_shows_the_data(browser, prepared):
    check_rendered(browser, prepared / "report.html")
    from selenium.webdriver.common.by import By

    assert browser.find_element(By.CSS_SELECTOR, '[data-figure="post-length"]').size["width"] > 0
    assert "Class balance" in browser.find_element(By.TAG_NAME, "body").text


@pytest.fixture(scope="module")
def demo_server(trained_run):
    from sentitune.config import ServeSettings
    from sentitune.scoring import Predictor
    from sentitune.serve import create_app

    run = os.environ.get("SENTITUNE_REPORT_RUN") or trained_run
    app = create_app(Predictor(str(run)), ServeSettings(host="127.0.0.1", port=0))
    with serving(app) as running:
        yield running


def label_posts(driver, posts: list[str], explain: bool = False) -> list:
    """Put `posts` in the text box, press the button, and wait for the results (or the message)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.getElementById('posts').value = arguments[0]", "\n".join(posts))
    box = driver.find_element(By.ID, "explain")
    if box.is_selected() != explain:
        box.click()
    driver.execute_script("document.getElementById('results').replaceChildren()")
    driver.find_element(By.ID, "label").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result"))
    return driver.find_elements(By.CSS_SELECTOR, ".result")


def test_the_demo_page_labels_a_typed_post_with_three_bars(browser, demo_server, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"{demo_server.url}/")
    browser.find_element(By.ID, "posts").send_keys("what a great day, thank you all")
    browser.find_element(By.ID, "label").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result"))
    (result,) = browser.find_elements(By.CSS_SELECTOR, ".result")
    assert result.find_element(By.CSS_SELECTOR, ".label").text.lower() in ("negative", "neutral", "positive")
    bars = result.find_elements(By.TAG_NAME, "progress")
    assert len(bars) == 3 and all(b.size["width"] > 0 for b in bars)
    values = [float(b.get_attribute("value")) for b in bars]
    assert sum(values) == pytest.approx(1, abs=1e-3)
    assert console_errors(browser) == []
    label_posts(browser, ["what a great day, thank you all", "worst airline ever, never again"], explain=True)
    assert browser.find_elements(By.CSS_SELECTOR, ".result .word")
    screenshot(browser, tmp_path, "demo.png")


def test_the_demo_page_shows_hostile_posts_as_text_and_caps_a_huge_paste(browser, demo_server):
    from selenium.webdriver.common.by import By

    browser.get(f"{demo_server.url}/")
    results = label_posts(browser, HOSTILE, explain=True)
    assert [r.find_element(By.CSS_SELECTOR, ".text").text for r in results] == HOSTILE
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert not browser.find_elements(By.CSS_SELECTOR, "#results img, #results script")
    results = label_posts(browser, [f"post number {i}" for i in range(10_000)])
    assert len(results) == 1000
    assert browser.find_element(By.ID, "message").text == (
        "10000 posts: labelling the first 1000 (the most one request takes)."
    )
    assert console_errors(browser) == []


def test_a_csv_picked_in_the_demo_page_fills_the_posts_from_its_text_column(browser, demo_server, tmp_path):
    from selenium.webdriver.common.by import By

    posts = ["what a great day", 'worst service, "ever"', "meh"]
    pd.DataFrame({"id": [1, 2, 3], "text": posts}).to_csv(tmp_path / "posts.csv", index=False)
    browser.get(f"{demo_server.url}/")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "posts.csv"))
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "posts").get_attribute("value"))
    assert browser.find_element(By.ID, "posts").get_attribute("value").split("\n") == posts
    assert browser.find_element(By.ID, "message").text == "posts.csv: 3 posts"
    browser.find_element(By.ID, "label").click()
    WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result")) == 3)
    assert console_errors(browser) == []


# Posts whose characters a JavaScript string counts differently from the API (UTF-16 units against code
# points): an emoji outside the BMP, a skin tone, a ZWJ family, a flag, combining accents (e + U+0301),
# and right-to-left Hebrew and Arabic, each with words after them that must still be highlighted.
UNICODE_POSTS = [
    "@united lost my bag AGAIN 😡 http://t.co/abc",
    "family trip 👨\u200d👩\u200d👧\u200d👦 was great 👍🏽 thanks 🇬🇧 crew",
    "cafe\u0301 au lait was gre\u0301at, nai\u0308ve me",
    "שלום עולם the flight was awful",
    "الخدمة ممتازة جدا 😍 thank you",
]
SHOWN = """
return [...document.querySelectorAll('#results .result .text')].map((line) => ({
  text: line.textContent.toWellFormed(),  // a lone surrogate (half an emoji) becomes U+FFFD
  direction: getComputedStyle(line).direction,
  words: [...line.querySelectorAll('.word')].map((span) => ({
    text: span.textContent.toWellFormed(), start: Number(span.dataset.start ?? -1), end: Number(span.dataset.end ?? -1),
    colour: getComputedStyle(span).backgroundColor,
  })),
}));
"""


def test_the_demo_page_highlights_the_words_the_api_explains_in_posts_with_emoji_accents_and_rtl(
    browser, demo_server, tmp_path
):
    import httpx

    browser.get(f"{demo_server.url}/")
    label_posts(browser, UNICODE_POSTS, explain=True)
    shown = browser.execute_script(SHOWN)
    body = {"instances": UNICODE_POSTS, "parameters": {"explain": True}}
    answer = httpx.post(f"{demo_server.url}/predict", json=body, timeout=60).json()["predictions"]
    assert len(shown) == len(UNICODE_POSTS)
    for post, line, prediction in zip(UNICODE_POSTS, shown, answer, strict=True):
        assert line["text"] == post  # every character once, none cut in two (no U+FFFD)
        words = prediction["explanation"]["words"]
        assert all(post[w["start"] : w["end"]] == w["word"] for w in words)  # the API counts code points
        assert [w["text"] for w in line["words"]] == [w["word"] for w in words]  # the highlighted words
        assert [(w["start"], w["end"]) for w in line["words"]] == [(w["start"], w["end"]) for w in words]
        peak = max(abs(w["attribution"]) for w in words)
        for span, word in zip(line["words"], words, strict=True):
            green = span["colour"].startswith("rgba(39, 174, 96") or span["colour"] == "rgb(39, 174, 96)"
            assert green == (word["attribution"] >= 0), (word, span)
            if abs(word["attribution"]) == peak:
                assert span["colour"].endswith(", 0.6)"), (word, span)
    assert [line["words"][-1]["text"] for line in shown[:2]] == ["http://t.co/abc", "crew"]
    assert [line["direction"] for line in shown] == ["ltr", "ltr", "ltr", "rtl", "rtl"]
    assert console_errors(browser) == []
    screenshot(browser, tmp_path, "demo-unicode.png")
