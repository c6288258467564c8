"""Piper's text-to-phoneme step (espeak-ng, a C library) run in a child process.

espeak-ng has memory bugs that a client's text can reach: a long run of abbreviation-like letters
(`"x." * 100`, `"ж." * 40`) or stacked suffixes (`"s'" * 220`) overflows a fixed-size phoneme buffer
and kills the process with SIGSEGV. In the server's own process that is every request at once; here it
is one child, restarted on the next call, and the request that caused it gets a 400. The numeric half
of synthesis (phoneme ids to audio, onnxruntime) stays in the server.
"""

from __future__ import annotations

import json
import logging
import select
import signal
import subprocess
import sys
import threading
from functools import cache
from typing import IO, Any

from voxserve.errors import InvalidRequest

log = logging.getLogger(__name__)


class PhonemizeFailed(InvalidRequest):
    def __init__(self, why: str) -> None:
        super().__init__(f"The input text could not be turned into speech ({why}).", param="input")


@cache
def _voice(config_path: str) -> Any:
    from piper import PiperVoice
    from piper.config import PiperConfig

    with open(config_path, encoding="utf-8") as config:
        # No onnxruntime session: only the text side of the voice is used here.
        return PiperVoice(session=None, config=PiperConfig.from_dict(json.load(config)))  # type: ignore[arg-type]


def _serve() -> None:
    """The child: one JSON request per line on stdin ([config_path, text]), one JSON answer per line on
    stdout ([true, phonemes] or [false, why]), until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    for line in sys.stdin:
        config_path, text = json.loads(line)
        try:
            answer = [True, _voice(config_path).phonemize(text)]
        except Exception as exc:
            answer = [False, f"{type(exc).__name__}: {exc}"]
        out.write(json.dumps(answer) + "\n")
        out.flush()


class IsolatedPhonemizer:
    """One child process (`python -m voxserve.engines.isolated_phonemizer`), shared by every voice and
    request: espeak-ng is single-threaded anyway, and a call takes about a millisecond."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[str]:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "voxserve.engines.isolated_phonemizer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(5)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()

    def start(self) -> None:
        """Start the child now (importing piper takes it about a second), not on the first request."""
        with self._lock:
            if self._process is None:
                self._start()

    def _ask(self, process: subprocess.Popen[str], config_path: str, text: str) -> list[Any] | None:
        """The child's answer, or None if it died; raises PhonemizeFailed past the timeout."""
        stdin: IO[str] = process.stdin  # type: ignore[assignment]
        stdout: IO[str] = process.stdout  # type: ignore[assignment]
        try:
            stdin.write(json.dumps([config_path, text]) + "\n")
            stdin.flush()
            ready, _, _ = select.select([stdout], [], [], self.timeout)
            if not ready:
                self._stop()
                log.warning("phonemizer took over %g s on a %d-character input; restarted", self.timeout, len(text))
                raise PhonemizeFailed("the phonemizer timed out")
            line = stdout.readline()
        except (BrokenPipeError, OSError, ValueError):
            line = ""
        if not line:
            return None
        answer: list[Any] = json.loads(line)
        return answer

    def phonemize(self, config_path: str, text: str) -> list[list[str]]:
        """Phonemes grouped by sentence, as `PiperVoice.phonemize` returns them.

        Raises PhonemizeFailed when the text kills the phonemizer twice (the first death might have had
        another cause, such as the child being killed), or takes longer than `timeout`."""
        with self._lock:
            for _ in range(2):
                process = self._process if self._process is not None and self._process.poll() is None else None
                if process is None:
                    self._stop()
                    process = self._start()
                answer = self._ask(process, config_path, text)
                if answer is None:
                    try:
                        code: int | None = process.wait(2)
                    except subprocess.TimeoutExpired:
                        code = None
                    self._stop()
                    self.restarts += 1
                    log.warning("phonemizer process died (exit code %s) on a %d-character input", code, len(text))
                    continue
                ok, value = answer
                if not ok:
                    raise PhonemizeFailed(value)
                phonemes: list[list[str]] = value
                return phonemes
        raise PhonemizeFailed("the phonemizer crashed on it")

    def close(self) -> None:
        with self._lock:
            self._stop()


# The server's one phonemizer process.
PHONEMIZER = IsolatedPhonemizer()

if __name__ == "__main__":
    _serve()
