"""The browser playground at `/`, driven in real headless Chromium (Debian's chromium + chromedriver).

Screenshots of the page and of each panel are kept in test-artifacts/playground/ (ignored by git).
The microphone and voice-chat panels need the Realtime API: their flows are tested with it.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from openai import OpenAI
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.audio_tools import wer
from tests.conftest import KEY, Server
from voxserve.server.routes.playground import STATIC_DIR

ARTIFACTS = Path(os.environ.get("VOXSERVE_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
SHOTS = ARTIFACTS / "playground"
HOOKS = ("file-input", "transcribe-button", "transcript", "mic-button", "live-captions", "tts-text", "tts-voice",
         "tts-button", "tts-audio", "talk-button", "chat-log")  # fmt: skip
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("the playground tests need Debian's chromium and chromium-driver (make system-deps)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="voxserve-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={profile}", "--window-size=1280,1100"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The system chromedriver, named explicitly: Selenium must never try to fetch a driver or a browser.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def hook(driver: WebDriver, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def attribute_becomes(driver: WebDriver, name: str, attribute: str, values: set[str], timeout: float) -> str:
    WebDriverWait(driver, timeout).until(lambda d: hook(d, name).get_attribute(attribute) in values)
    return str(hook(driver, name).get_attribute(attribute))


def open_page(driver: WebDriver, base_url: str) -> None:
    if driver.current_url == f"{base_url}/":
        return  # already there: the panels keep what earlier steps did, for the screenshots
    driver.get(f"{base_url}/")
    attribute_becomes(driver, "server-status", "data-state", {"ok", "needs-key", "down"}, 30)


def page_errors(driver: WebDriver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_page_and_files_are_served_without_a_key(keyed_server: Server) -> None:
    page = httpx.get(f"{keyed_server.base_url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for hook_name in HOOKS:
        assert f'data-testid="{hook_name}"' in page.text, hook_name
    shipped = sorted(path.name for path in STATIC_DIR.iterdir())
    assert shipped == ["api.js", "app.js", "index.html", "pcm-worklet.js", "realtime.js", "style.css"]
    for name in shipped:
        served = httpx.get(f"{keyed_server.base_url}/playground/{name}")
        assert served.status_code == 200, name
        # No key in the page: nothing the server knows is templated in, and nothing loads from elsewhere.
        assert KEY not in served.text
        assert not re.search(r"""(src|href)=["']https?://""", served.text), name
    assert httpx.get(f"{keyed_server.base_url}/playground/nothing.js").status_code == 404
    # Everything else still needs the key.
    assert httpx.get(f"{keyed_server.base_url}/v1/audio/voices").status_code == 401


def test_upload_shows_the_transcript_as_it_streams(
    browser: WebDriver, server: Server, long_english: tuple[Path, str]
) -> None:
    open_page(browser, server.base_url)
    assert hook(browser, "server-status").get_attribute("data-state") == "ok"
    for hook_name in HOOKS:
        assert hook(browser, hook_name) is not None

    path, text = long_english
    hook(browser, "file-input").send_keys(str(path))
    model = hook(browser, "stt-model")
    model.clear()
    model.send_keys("whisper-tiny.en")  # two 30 s windows, quickly
    # Note when each piece of text lands in the transcript, and when the transcript is done.
    browser.execute_script(
        """
        const box = arguments[0];
        window.arrivals = [];
        new MutationObserver(() => {
          window.arrivals.push({at: performance.now(), state: box.dataset.state, length: box.textContent.length});
        }).observe(box, {childList: true, attributes: true, attributeFilter: ["data-state"]});
        """,
        hook(browser, "transcript"),
    )
    hook(browser, "transcribe-button").click()
    assert attribute_becomes(browser, "transcript", "data-state", {"done", "error"}, 180) == "done", hook(
        browser, "transcribe-status"
    ).text
    transcript = hook(browser, "transcript")
    assert wer(text, transcript.text) < 0.1, transcript.text
    assert transcript.text == transcript.get_attribute("data-text")  # the deltas joined are the final text
    deltas = int(transcript.get_attribute("data-deltas") or 0)
    assert deltas >= 2
    arrivals = browser.execute_script("return window.arrivals")
    texts = [a for a in arrivals if a["state"] == "running" and a["length"] > 0]
    finished = next(a["at"] for a in arrivals if a["state"] == "done")
    # Text was on the page before the transcription had finished: it streamed.
    assert texts and texts[0]["at"] < finished - 100 and texts[0]["length"] < len(transcript.text)
    assert "streamed part" in hook(browser, "transcribe-status").text
    hook(browser, "panel-transcribe").screenshot(str(SHOTS / "panel-transcribe.png"))
    assert page_errors(browser) == []


def test_text_to_speech_plays_in_the_page(browser: WebDriver, server: Server, client: OpenAI) -> None:
    open_page(browser, server.base_url)
    said = "The playground speaks through your own server."
    box = hook(browser, "tts-text")
    box.clear()
    box.send_keys(said)
    voices = Select(hook(browser, "tts-voice"))
    assert {"alloy", "en_US-joe-medium"} <= {option.get_attribute("value") for option in voices.options}
    voices.select_by_value("en_US-joe-medium")
    Select(hook(browser, "tts-format")).select_by_value("wav")
    hook(browser, "tts-button").click()
    assert attribute_becomes(browser, "tts-audio", "data-state", {"ready", "error"}, 120) == "ready", hook(
        browser, "tts-status"
    ).text

    player = hook(browser, "tts-audio")
    duration = browser.execute_script("return arguments[0].duration", player)
    assert 1.0 < duration < 10
    # It plays: the clock moves (autoplay is allowed for the test browser).
    played = browser.execute_async_script(
        """
        const [audio, done] = arguments;
        audio.currentTime = 0;
        audio.play().then(() => setTimeout(() => done(audio.currentTime), 700), (e) => done(String(e)));
        """,
        player,
    )
    assert isinstance(played, float) and played > 0.1, played
    # And what it plays is the text: the page's own audio, transcribed by the server.
    data = browser.execute_async_script(
        """
        const [audio, done] = arguments;
        fetch(audio.src).then((r) => r.arrayBuffer()).then((buffer) => {
          let text = "";
          const bytes = new Uint8Array(buffer);
          for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          done(btoa(text));
        }, (error) => done(`failed: ${error}`));
        """,
        player,
    )
    audio = base64.b64decode(data)
    with av.open(io.BytesIO(audio)) as container:
        assert container.format.name == "wav"
    heard = client.audio.transcriptions.create(model="whisper-1", file=("page.wav", audio)).text
    assert wer(said, heard) < 0.2, heard
    hook(browser, "panel-tts").screenshot(str(SHOTS / "panel-tts.png"))
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(SHOTS / "page.png"))
    assert page_errors(browser) == []


def test_a_typed_key_unlocks_the_page(browser: WebDriver, keyed_server: Server) -> None:
    open_page(browser, keyed_server.base_url)
    assert hook(browser, "server-status").get_attribute("data-state") == "needs-key"
    field = hook(browser, "api-key")
    field.send_keys(KEY, Keys.ENTER)
    attribute_becomes(browser, "server-status", "data-state", {"ok"}, 30)
    # The voices list came through the key; the key is not written into the page.
    assert "alloy" in {o.get_attribute("value") for o in Select(hook(browser, "tts-voice")).options}
    assert KEY not in browser.page_source
    for panel in ("panel-captions", "panel-chat"):
        hook(browser, panel).screenshot(str(SHOTS / f"{panel}.png"))
    browser.execute_script("sessionStorage.clear()")
