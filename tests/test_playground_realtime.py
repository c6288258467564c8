"""The playground's realtime panels in real headless Chromium, with a fake microphone fed from a wav of
speech: live captions (a realtime transcription session) and push-to-talk voice chat (a realtime
conversation session).

Chromium takes its fake microphone from a file named at launch, so each test starts its own browser.
The page's WebSocket is watched from inside the page (the key it offered, every event it received), so
the assertions see what the page saw. Screenshots land in test-artifacts/playground/.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.audio_tools import wav_bytes, wer
from tests.conftest import Server
from tests.realtime_tools import DEV_SPEECH, clip_pcm, clip_text, validate
from tests.test_playground import CHROMEDRIVER, CHROMIUM, SHOTS, hook, page_errors

# Clean read speech, about 9 s: one caption turn.
CAPTION_CLIP = "en_ljspeech_LJ049-0110"
# A short question for the voice chat (about 4 s).
QUESTION_CLIP = "en_ls_test-other_367-130732-0001"  # "When is a lobster not a lobster? When it is a crayfish."
CLIENT_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
CAPTURE_RATE = 48000  # what Chromium's audio capture runs at; the page converts it to 24 kHz

if not (DEV_SPEECH / "manifest.jsonl").exists():
    pytest.fail(f"dev-speech is missing at {DEV_SPEECH} (../shared beside the repository)")

# Records, inside the page, the subprotocols each realtime WebSocket offered, every event it sent and
# every event it received.
WATCH_SOCKETS = """
if (!window.socketLog) {
  window.socketLog = {offered: [], sent: [], events: [], closes: []};
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      window.socketLog.offered.push({url: String(url), protocols: [].concat(protocols || [])});
      this.addEventListener("message", (m) => {
        try { window.socketLog.events.push(JSON.parse(m.data)); } catch (_) { /* not JSON */ }
      });
      this.addEventListener("close", (c) => window.socketLog.closes.push(c.code));
    }
    send(data) {
      try { window.socketLog.sent.push(JSON.parse(data)); } catch (_) { /* not JSON */ }
      return super.send(data);
    }
  };
}
"""

# Counts the audio the page schedules for playback (AudioBufferSourceNode.start on PCM answers).
WATCH_PLAYBACK = """
if (!window.playback) {
  window.playback = {buffers: 0, seconds: 0};
  const start = AudioBufferSourceNode.prototype.start;
  AudioBufferSourceNode.prototype.start = function (...args) {
    window.playback.buffers += 1;
    window.playback.seconds += this.buffer ? this.buffer.duration : 0;
    return start.apply(this, args);
  };
}
"""


def mic_wav(tmp_path: Path, clip_id: str, before: float, after: float) -> Path:
    """A dev-speech clip with quiet around it, as 16-bit PCM mono at 48 kHz (Chromium's fake capture
    plays it once, then silence)."""
    speech = clip_pcm(clip_id, CAPTURE_RATE).astype(np.float32) / 32768
    quiet = np.zeros(int(CAPTURE_RATE * before), np.float32), np.zeros(int(CAPTURE_RATE * after), np.float32)
    path = tmp_path / f"{clip_id}-mic.wav"
    path.write_bytes(wav_bytes(np.concatenate([quiet[0], speech, quiet[1]]), CAPTURE_RATE))
    return path


@pytest.fixture
def mic_browser() -> Iterator[Callable[[Path], WebDriver]]:
    """Starts a headless Chromium whose microphone is the given wav (played once, no permission prompt)."""
    started: list[tuple[WebDriver, str]] = []

    def start(wav: Path) -> WebDriver:
        if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
            pytest.fail("the playground tests need Debian's chromium and chromium-driver (make system-deps)")
        SHOTS.mkdir(parents=True, exist_ok=True)
        profile = tempfile.mkdtemp(prefix="voxserve-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={wav}%noloop",
                     f"--user-data-dir={profile}", "--window-size=1280,1100"):  # fmt: skip
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        os.environ.setdefault("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_script_timeout(60)
        started.append((driver, profile))
        return driver

    yield start
    for driver, profile in started:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_watched_page(driver: WebDriver, base_url: str) -> None:
    driver.get(f"{base_url}/")
    WebDriverWait(driver, 30).until(lambda d: hook(d, "server-status").get_attribute("data-state") != "checking")
    assert hook(driver, "server-status").get_attribute("data-state") == "ok"
    driver.execute_script(WATCH_SOCKETS + WATCH_PLAYBACK)


def socket_log(driver: WebDriver) -> dict[str, Any]:
    log: dict[str, Any] = driver.execute_script("return window.socketLog")
    return log


def assert_events_valid(events: list[dict[str, Any]]) -> None:
    for event in events:
        validate(event)  # strict, against the SDK's own types: what the page read is the real protocol


def assert_sent_valid(sent: list[dict[str, Any]]) -> None:
    """What the page sent is the GA protocol as the SDK types it (no beta names, no stray fields)."""
    for event in sent:
        CLIENT_EVENTS.validate_python(event, strict=True)


def assert_ephemeral_key(driver: WebDriver) -> None:
    offered = socket_log(driver)["offered"]
    assert offered, "the page opened no WebSocket"
    protocols = offered[-1]["protocols"]
    assert protocols[0] == "realtime"
    keys = [p.removeprefix("openai-insecure-api-key.") for p in protocols if p.startswith("openai-insecure-api-key.")]
    # The page minted a short-lived key through POST /v1/realtime/client_secrets; no key is baked in.
    assert len(keys) == 1 and keys[0].startswith("ek_"), protocols


def test_microphone_shows_live_captions(
    mic_browser: Callable[[Path], WebDriver], server: Server, tmp_path: Path
) -> None:
    browser = mic_browser(mic_wav(tmp_path, CAPTION_CLIP, before=1.0, after=4.0))
    open_watched_page(browser, server.base_url)
    captions = hook(browser, "live-captions")
    # Note each caption line as it changes: partial (growing while the clip plays) or final.
    browser.execute_script(
        """
        const box = arguments[0];
        window.captionChanges = [];
        new MutationObserver(() => {
          for (const p of box.querySelectorAll("p")) {
            window.captionChanges.push({state: p.className, length: p.textContent.length});
          }
        }).observe(box, {childList: true, subtree: true, characterData: true, attributes: true});
        """,
        captions,
    )
    button = hook(browser, "mic-button")
    button.click()
    WebDriverWait(browser, 30).until(lambda d: hook(d, "mic-button").get_attribute("data-state") in {"live", "error"})
    assert button.get_attribute("data-state") == "live", hook(browser, "captions-status").text
    assert_ephemeral_key(browser)

    # Partial captions while the clip plays, then the final line once the server's VAD ends the turn.
    WebDriverWait(browser, 120).until(
        lambda d: d.execute_script(
            "return arguments[0].querySelector('p.final') !== null || "
            "window.socketLog.events.some((e) => e.type === 'error')",
            captions,
        )
    )
    events = socket_log(browser)["events"]
    errors = [e for e in events if e["type"] == "error"]
    assert not errors, errors
    reference = clip_text(CAPTION_CLIP)
    final = captions.find_element("css selector", "p.final").text
    assert wer(reference, final) < 0.3, final
    assert wer(reference, captions.text) < 0.3, captions.text
    changes = browser.execute_script("return window.captionChanges")
    assert any(c["state"] == "partial" and c["length"] > 0 for c in changes), changes  # text before the end

    types = [e["type"] for e in events]
    assert types[0] == "session.created"
    assert events[0]["session"]["type"] == "transcription"
    assert "session.updated" in types
    turn = ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed")
    for expected in (*turn, "conversation.item.input_audio_transcription.completed"):
        assert expected in types, types
    updated = next(e for e in events if e["type"] == "session.updated")
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert_events_valid(events)
    sent = socket_log(browser)["sent"]
    assert sent[0]["type"] == "session.update" and sent[0]["session"]["type"] == "transcription"
    appends = [e for e in sent if e["type"] == "input_audio_buffer.append"]
    assert len(appends) >= 50  # 100 ms each
    assert {len(base64.b64decode(e["audio"])) for e in appends[:-1]} == {4800}  # 100 ms of 24 kHz PCM16
    assert_sent_valid(sent)
    # The speech was heard where it is in the clip: the page sent 24 kHz audio in time (a wrong rate
    # conversion would stretch or squeeze it).
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    spoken = len(clip_pcm(CAPTION_CLIP)) / 24000
    heard = (stopped["audio_end_ms"] - started["audio_start_ms"]) / 1000
    assert spoken * 0.8 < heard < spoken * 1.3 + 1.0, (heard, spoken)
    # The first words too: the speech starts 1 s into the session (less the 300 ms prefix padding).
    assert 0.5 <= started["audio_start_ms"] / 1000 <= 1.4, started

    hook(browser, "panel-captions").screenshot(str(SHOTS / "panel-captions-live.png"))
    button.click()  # stop
    WebDriverWait(browser, 10).until(lambda d: hook(d, "mic-button").get_attribute("data-state") == "idle")
    assert page_errors(browser) == []


def test_push_to_talk_answers_in_the_chat_log(
    mic_browser: Callable[[Path], WebDriver], server: Server, tmp_path: Path
) -> None:
    before, after = 0.5, 1.0
    wav = mic_wav(tmp_path, QUESTION_CLIP, before=before, after=after)
    browser = mic_browser(wav)
    open_watched_page(browser, server.base_url)
    talk = hook(browser, "talk-button")
    # Press and hold for the whole question (the fake microphone starts when the page opens it, on the
    # press), then release: the page commits the buffer and asks for a response.
    spoken = len(clip_pcm(QUESTION_CLIP)) / 24000
    ActionChains(browser).click_and_hold(talk).pause(before + spoken + after).release(talk).perform()

    def settled(driver: WebDriver) -> bool:
        events = driver.execute_script("return window.socketLog.events")
        return any(e["type"] in {"response.done", "error"} for e in events) or bool(
            driver.execute_script("return window.socketLog.closes.length")
        )

    WebDriverWait(browser, 180).until(settled)
    events = socket_log(browser)["events"]
    sent = socket_log(browser)["sent"]
    # The page asked for a push-to-talk conversation in the GA shape (checked even where the server
    # refuses conversations).
    assert sent and sent[0]["type"] == "session.update", sent
    session = sent[0]["session"]
    assert session["type"] == "realtime" and session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["turn_detection"] is None
    pcm = {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["format"] == session["audio"]["output"]["format"] == pcm
    assert_sent_valid(sent)
    assert_ephemeral_key(browser)
    errors = [e for e in events if e["type"] == "error"]
    assert not errors, errors
    assert events[0]["type"] == "session.created" and events[0]["session"]["type"] == "realtime"
    updated = next(e for e in events if e["type"] == "session.updated")
    assert updated["session"]["audio"]["input"]["turn_detection"] is None  # push to talk: no server VAD
    # The transcript of the question may come after the answer; wait for both on the page.
    log = hook(browser, "chat-log")
    WebDriverWait(browser, 120).until(
        lambda d: d.execute_script(
            "const log = arguments[0];"
            "const user = log.querySelector('p.user:not(.pending)');"
            "const assistant = log.querySelector('p.assistant:not(.pending)');"
            "return user && assistant && assistant.textContent.trim().length > 0;",
            log,
        )
    )
    user = log.find_element("css selector", "p.user").text
    assistant = log.find_element("css selector", "p.assistant").text
    assert wer(clip_text(QUESTION_CLIP), user) < 0.4, user
    assert len(assistant.split()) >= 2, assistant
    types = [e["type"] for e in socket_log(browser)["events"]]
    for expected in ("input_audio_buffer.committed", "response.created", "response.output_audio.delta",
                     "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                     "response.done"):  # fmt: skip
        assert expected in types, types
    assert "input_audio_buffer.speech_started" not in types
    # On release: the rest of the audio, then commit and response.create, once each.
    kinds = [e["type"] for e in sent]
    assert kinds[-2:] == ["input_audio_buffer.commit", "response.create"], kinds
    assert kinds.count("input_audio_buffer.commit") == 1 and kinds.count("response.create") == 1
    heard = sum(len(base64.b64decode(e["audio"])) for e in sent if e["type"] == "input_audio_buffer.append")
    assert heard / 48000 > spoken, (heard / 48000, spoken)  # the whole question went out
    assert_events_valid(socket_log(browser)["events"])
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed", done
    # The spoken answer was played: PCM pieces were scheduled on the page's AudioContext.
    playback = browser.execute_script("return window.playback")
    assert playback["buffers"] >= 1 and playback["seconds"] > 0.5, playback
    hook(browser, "panel-chat").screenshot(str(SHOTS / "panel-chat-answer.png"))
    assert page_errors(browser) == []


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_capture_worklet_makes_24khz_pcm16_at_any_context_rate(
    mic_browser: Callable[[Path], WebDriver], server: Server, tmp_path: Path, rate: int
) -> None:
    """The page asks for a 24 kHz AudioContext; where a browser gives another rate, the worklet converts.
    A 440 Hz tone rendered offline at `rate` through it must come out as 1 s of 440 Hz at 24 kHz."""
    quiet = tmp_path / "quiet.wav"
    quiet.write_bytes(wav_bytes(np.zeros(CAPTURE_RATE // 10, np.float32), CAPTURE_RATE))
    browser = mic_browser(quiet)
    browser.get(f"{server.base_url}/")
    result = browser.execute_async_script(
        """
        const [rate, done] = arguments;
        (async () => {
          const context = new OfflineAudioContext(1, rate, rate);
          await context.audioWorklet.addModule("/playground/pcm-worklet.js");
          const node = new AudioWorkletNode(context, "pcm16-capture", {processorOptions: {targetRate: 24000}});
          const pieces = [];
          let flushed = null;
          node.port.onmessage = (m) => {
            pieces.push(new Int16Array(m.data.pcm));
            if (m.data.flushed) flushed();
          };
          const tone = context.createBuffer(1, rate, rate);
          const data = tone.getChannelData(0);
          for (let i = 0; i < rate; i++) data[i] = 0.5 * Math.sin(2 * Math.PI * 440 * i / rate);
          const source = context.createBufferSource();
          source.buffer = tone;
          source.connect(node).connect(context.destination);
          source.start();
          await context.startRendering();
          await new Promise((resolve) => { flushed = resolve; node.port.postMessage("flush"); });
          const samples = pieces.flatMap((p) => Array.from(p));
          let crossings = 0;
          for (let i = 1; i < samples.length; i++) if ((samples[i - 1] < 0) !== (samples[i] < 0)) crossings++;
          const peak = Math.max(...samples.map(Math.abs));
          done({count: samples.length, chunks: pieces.map((p) => p.length), crossings, peak});
        })().catch((e) => done({error: String(e)}));
        """,
        rate,
    )
    assert "error" not in result, result
    assert abs(result["count"] - 24000) <= 128, result["count"]  # 1 s at 24 kHz (give or take a render quantum)
    assert set(result["chunks"][:-1]) == {2400}  # 100 ms chunks, the flushed rest last
    assert abs(result["crossings"] / 2 - 440) <= 5, result["crossings"]  # still 440 Hz: no speed change
    assert 0.45 * 32767 < result["peak"] < 0.52 * 32767, result["peak"]
