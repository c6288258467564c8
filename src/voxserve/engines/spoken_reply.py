"""The spoken-reply pipeline: a chat backend's streamed answer, spoken while it is still being generated.

Text deltas from any chat backend are cut into sentences (the first piece sooner: a clause, or the
first dozen words of a long sentence), each piece is synthesized as soon as it is complete, and the
reply comes out as neutral events that each protocol shapes: `/v1/chat/completions` into
`delta.audio` chunks, a realtime session into `response.output_audio.delta` events. Closing a reply
stops generation and synthesis at once and frees both engines' slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from voxserve.audio.encode import OUTPUT_RATE
from voxserve.engines.chat_backend import ChatBackend, ChatBody
from voxserve.engines.text_to_speech import TextToSpeech, VoiceEntry

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n\s*\n")
_CLAUSE_END = re.compile(r"[,;:]\s+")
# The first spoken piece may end at a clause, so speech starts sooner; a clause this short would
# sound clipped.
_MIN_CLAUSE_WORDS = 4
# ...or, in a long first sentence with no comma, after this many words: the first audio then waits for
# about 15 tokens and 0.2 s of synthesis instead of the whole sentence, at the cost of one pause there.
_FIRST_PIECE_MAX_WORDS = 12
_SPEAKABLE = re.compile(r"\w")
# The first piece, ended by its last token: a word of two or more letters (not a digit, an initial or an
# abbreviation like "e.g", where a "3." or "U." may go on) and the punctuation, with nothing after it.
# Waiting for the next token to bring the space costs one token's time (about 40 ms) of the first audio.
_ENDS_A_PIECE = re.compile(r"(?:^|\s)[^\W\d_]{2,}[.!?,;:]$")


def split_sentences(buffer: str, *, first_clause: bool = False) -> tuple[list[str], str]:
    """Complete sentences at the front of `buffer`, and the unfinished rest.

    With `first_clause`, a leading clause of a few words (or the first dozen words of a long
    sentence) counts as complete when no sentence has ended yet: the first audio of a spoken answer
    then waits for fewer tokens and less synthesis.
    """
    sentences = []
    start = 0
    for match in _SENTENCE_END.finditer(buffer):
        sentence = buffer[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    if first_clause and not sentences:
        for match in _CLAUSE_END.finditer(buffer):
            clause = buffer[: match.end()].strip()
            if len(clause.split()) >= _MIN_CLAUSE_WORDS:
                return [clause], buffer[match.end() :]
        if _ENDS_A_PIECE.search(buffer) and len(buffer.split()) >= _MIN_CLAUSE_WORDS:
            return [buffer.strip()], ""
        words = list(re.finditer(r"\S+", buffer))
        if len(words) > _FIRST_PIECE_MAX_WORDS:  # the last word may still be growing: cut before it
            cut = words[_FIRST_PIECE_MAX_WORDS - 1].end()
            return [buffer[:cut].strip()], buffer[cut:]
    return sentences, buffer[start:]


def speakable(text: str) -> str:
    # Markdown marks would be read out literally ("asterisk"); the transcript keeps them.
    return re.sub(r"[*_#`>|]+", " ", text).strip()


def with_voice_instructions(messages: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    """`messages` with the spoken-answer instruction first, unless they carry their own system or
    developer message (or the instruction is empty).

    A system message, measured against the instruction next to the question (Qwen2.5-Coder-0.5B, 2 x 24
    questions, right typed / spoken): system 21/19 + 22/20; after the question 20/19 + 18/16; after it with
    an empty system message 20/19 + 17/14; in both places 20/18 + 21/19. Telling the model the question
    came through speech recognition fixed no misheard question and cost up to 10 typed answers. Typed, on
    all three question sets (72): this instruction 58; six other instructions 51-55, none 51, and worked
    examples as earlier turns 42-56."""
    if not instructions or any(m.get("role") in ("system", "developer") for m in messages):
        return messages
    return [{"role": "system", "content": instructions}, *messages]


@dataclass(frozen=True)
class TextDelta:
    """A fragment of the answer's text, as the backend generated it."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """`delta.tool_calls` entries, exactly as the backend streamed them."""

    tool_calls: list[dict[str, Any]]


@dataclass(frozen=True)
class AudioPiece:
    """One spoken piece of the answer: 16-bit little-endian mono PCM at 24 kHz."""

    pcm: bytes
    text: str  # what the piece says
    start_ms: float  # where it starts in the answer's audio
    duration_ms: float

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms


@dataclass(frozen=True)
class ReplyDone:
    """The last event of a reply that ran to its end (a closed reply emits none)."""

    finish_reason: str  # the backend's: "stop", "length", "tool_calls", ...
    text: str
    audio_ms: float
    usage: dict[str, Any] | None  # the backend's token usage, when it sent one


ReplyEvent = TextDelta | ToolCallDelta | AudioPiece | ReplyDone

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class SpokenReply:
    """One answer in progress. Iterate `events()` once; `aclose()` (from any task, at any moment)
    stops generation and synthesis and ends the iteration."""

    def __init__(
        self, chunks: AsyncIterator[ChatBody], tts: TextToSpeech, voice: VoiceEntry | None, speed: float = 1.0
    ) -> None:
        self._chunks = chunks
        self._tts = tts
        self.voice = voice  # None: text only, nothing is synthesized
        self.speed = speed
        self.text = ""
        self.audio_ms = 0.0  # of audio emitted so far, for truncating an interrupted answer
        self.finish_reason = "stop"
        self.usage: dict[str, Any] | None = None
        self.closed = False
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()
        # Generation pauses while the first piece is spoken: on a small machine the model racing ahead
        # (it is far faster than speech) only slows that synthesis, and so the first audio.
        self._first_audio = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    async def events(self) -> AsyncIterator[ReplyEvent]:
        if self._started:
            raise RuntimeError("a spoken reply is iterated once")
        self._started = True
        if self.closed:
            return
        self._tasks = [asyncio.create_task(self._text_side())]
        if self.voice is not None:
            self._tasks.append(asyncio.create_task(self._audio_side()))
        else:
            self._first_audio.set()
        try:
            finished = 0
            while finished < len(self._tasks):
                item = await self._out.get()
                if item is _END:
                    if self.closed:
                        return
                    finished += 1
                elif isinstance(item, _Failed):
                    raise item.error
                else:
                    yield item
            yield ReplyDone(self.finish_reason, self.text, self.audio_ms, self.usage)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop now: generation and synthesis end, their slots are freed, `events()` ends."""
        first = not self.closed
        self.closed = True
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if first:
            self._out.put_nowait(_END)  # wakes an `events()` waiting in another task
            # Closing the backend's stream at once (not whenever it is garbage-collected) frees the
            # embedded model's slot, or the upstream connection.
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _text_side(self) -> None:
        buffer = ""
        spoken = False
        try:
            async for chunk in self._chunks:
                if chunk.get("usage"):
                    self.usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("tool_calls"):
                        await self._out.put(ToolCallDelta(list(delta["tool_calls"])))
                    text = delta.get("content")
                    if text:
                        self.text += text
                        await self._out.put(TextDelta(text))
                        if self.voice is not None:
                            buffer += text
                            done, buffer = split_sentences(buffer, first_clause=not spoken)
                            for sentence in done:
                                spoken = True
                                await self._pieces.put(sentence)
                            if done and not self._first_audio.is_set():
                                await self._first_audio.wait()
                    if choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]
            if buffer.strip():
                await self._pieces.put(buffer.strip())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._out.put(_Failed(exc))
        finally:
            await self._pieces.put(None)
            await self._out.put(_END)

    async def _audio_side(self) -> None:
        assert self.voice is not None
        try:
            while (piece := await self._pieces.get()) is not None:
                words = speakable(piece)
                if not _SPEAKABLE.search(words):
                    continue  # only marks or emoji: nothing to say
                pcm, _ = await self._tts.synthesize(self.voice, words, self.speed, "pcm")
                duration_ms = len(pcm) / 2 / OUTPUT_RATE * 1000
                audio = AudioPiece(pcm, piece, self.audio_ms, duration_ms)
                self.audio_ms += duration_ms
                await self._out.put(audio)
                self._first_audio.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._out.put(_Failed(exc))
        finally:
            self._first_audio.set()
            await self._out.put(_END)


class SpokenReplies:
    """Starts spoken replies; holds what every one shares: the speech engine and the default
    instruction for spoken answers (`VOXSERVE_VOICE_INSTRUCTIONS`).

    A protocol drives one reply like this (the runtime's `spoken`, `chat` and `tts.voices`):

        body = {"model": model, "messages": spoken.instruct(messages), "max_tokens": limit}
        reply = await spoken.open(chat, body, tts.voices.resolve("alloy"), speed=1.0)
        async for event in reply.events():  # TextDelta, ToolCallDelta, AudioPiece, then ReplyDone
            ...
        await reply.aclose()  # at any moment, from any task: a cancel, a barge-in; reply.audio_ms was sent
    """

    def __init__(self, tts: TextToSpeech, instructions: str) -> None:
        self.tts = tts
        self.instructions = instructions

    def instruct(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return with_voice_instructions(messages, self.instructions)

    def wrap(self, chunks: AsyncIterator[ChatBody], voice: VoiceEntry | None, speed: float = 1.0) -> SpokenReply:
        """A reply over a backend stream already opened."""
        return SpokenReply(chunks, self.tts, voice, speed)

    async def open(
        self, backend: ChatBackend, body: ChatBody, voice: VoiceEntry | None, speed: float = 1.0
    ) -> SpokenReply:
        """Open `body` (a streamed chat request) on `backend`: its errors (unknown model, full queue, a
        prompt over the context) are raised here, before any event."""
        chunks = await backend.open_stream({**body, "stream": True})
        return self.wrap(chunks, voice, speed)
