"""What a realtime session needs from the engines and settings, injected: the composition root builds
it from the settings, unit tests and benchmarks build it with fakes or other values."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from voxserve.audio.input_stream import InputAudioStream
from voxserve.engines.registry import ModelSpec
from voxserve.engines.streaming_vad import SileroFrames
from voxserve.realtime.protocol import IdSource, new_id


@dataclass
class SessionEnv:
    """Its engines as callables and its settings: how a session decodes, detects turns and times out."""

    resolve_stt: Callable[[str], ModelSpec]
    default_stt_model: str
    beam_size: int = 5
    partial_beam_size: int = 5
    max_audio_seconds: float = 3600.0
    session_seconds: int = 3600
    live_deltas: bool = True
    partial_interval_ms: int = 500
    # The first live decode at this much speech (with the VAD's prefix padding: ~0.7 s of audio); loops
    # and misreadings of so little audio cost little since live decodes neither retry nor run long.
    partial_min_ms: int = 400
    # While a turn is young its live decodes are cheap (a second or two of audio) and its first words wait
    # for `live_agreement` of them: they come this often until the turn is `partial_quick_until_ms` long.
    partial_quick_interval_ms: int = 250
    partial_quick_until_ms: int = 2500
    # A live decode's words are sent once this many successive decodes agree on them, short of the
    # newest decode's last `live_hold_back_words` (see `LiveTranscript`).
    live_agreement: int = 3
    live_hold_back_words: int = 2
    live_short_reading_words: int = 3  # a reading this short holds back 1 word (see `LiveTranscript`)
    # Agreement weighted by Whisper's word probabilities (live decodes then time their words: the
    # alignment pass gives each word's probability): a word `live_sure_agreement` successive decodes
    # agree on goes out when each gave it at least `live_sure_probability`, and the `live_agreement`
    # rule takes only words each decode gave at least `live_unsure_probability` (an unsure word waits
    # for a surer reading or the final decode). None: plain agreement, the default: on dev-speech the
    # weighted rule sent the first words ~0.15 s sooner but cost ~2 words in 411 (benchmarks/realtime.py).
    live_sure_agreement: int | None = None
    live_sure_probability: float = 0.6
    live_unsure_probability: float | None = None
    # Hold back the words ending within this many seconds of a live decode's audio end, rather than its
    # last `live_hold_back_words` (None: by count). Needs timed words, as above.
    live_hold_back_seconds: float | None = None
    # A live decode that detected the language itself counts towards agreement only when this sure of it
    # (others are skipped; the agreeing decodes must also share their language).
    live_language_probability: float = 0.8
    # Final decodes never encode Whisper's full 30 s window again when unsure of a trimmed one (the
    # REST endpoint does): that re-decode costs ~2 s of CPU on whisper-base, past the turn's deadline.
    final_trimmed_only: bool = False
    # Silence after speech before the utterance is decoded speculatively (its final audio is known
    # then, unless speech resumes); also the silence kept at the end of a committed item.
    end_padding_ms: int = 200
    # Condition each turn's decode on the session's previous transcripts (after the client's prompt).
    turn_context: bool = True
    # A VAD turn that follows the previous one after at most `turn_audio_gap_ms` (from the end of its
    # audio to the start of this one's) is decoded with the audio of the run of turns so joined in
    # front, up to this much of it (0: never); the text of that part is cut off (see `PreviousTurn`).
    turn_audio_context_seconds: float = 10.0
    turn_audio_gap_ms: int = 500
    # Live decodes of such a turn also get that audio in front: their words then read as its final
    # decode will (dev-speech: 1 word in 411 better, live decode CPU 0.43 -> 0.46 s per audio second).
    live_audio_context: bool = True
    vad_frames: Callable[[], SileroFrames] = SileroFrames
    input_stream: Callable[[str, bool], InputAudioStream] = InputAudioStream
    clock: Callable[[], float] = time.time
    ids: IdSource = new_id
