"""Whether a chunk decoded as text only said everything its audio holds.

Without timestamp tokens Whisper sometimes ends its text a sentence early: the 70 s Spanish reading in
dev-speech loses "Valdemoro, 20 de Septiembre de 1881." at the end of its last chunk, with nothing in the
text to show it. A rate check (characters per second of speech) cannot see one short sentence missing
from a 20 s chunk: the rate of complete chunks varies more than that between speakers and languages
(13-20 characters a second on dev-speech). So the decoded text is aligned to the audio (Whisper's
cross-attention, as for word timestamps; one decoder pass, no search), and when its last word ends well
before the chunk does, the rest of the chunk is decoded again as a continuation.

That pass costs about a sixth of a long input's decoding (tiny.en), and nearly every chunk passes it. Between
chunks of one input (one speaker, one language) the rate varies much less than between speakers, so once a
few chunks are known only a chunk whose text is short for its speech, beside the input's own rate, is aligned
(`worth_aligning`).
"""

from __future__ import annotations

from typing import Any

import ctranslate2
import numpy as np

# A chunk ends at most about a second after its last speech (400 ms of padding, or half of a pause
# shorter than two seconds), so text ending this long before the chunk left speech undecoded.
UNCOVERED_SECONDS = 2.0
HOP_SECONDS = 0.01  # one mel frame
# Chunks of an input whose rates must be known before a chunk is judged by the input's own rate; an input
# of fewer chunks has every chunk aligned.
KNOWN_RATES = 4
# A chunk whose text has under this share of the input's median rate (characters per second of VAD speech)
# is aligned. A chunk that lost a sentence of its last 2 s in 20 s of speech is at about 0.9 of it.
SHORT_RATE = 0.93


def worth_aligning(rates: list[float | None], known: list[float]) -> list[bool]:
    """Which chunks to align: `rates` are this batch's (characters per second of speech, None when the
    speech is not known), `known` every rate of the input so far, this batch's included."""
    if len(known) < KNOWN_RATES:
        return [True] * len(rates)
    median = float(np.median(known))
    return [rate is None or rate < SHORT_RATE * median for rate in rates]


def text_ends(
    model: Any,
    sot_sequence: list[int],
    texts: list[list[int]],
    encoded: ctranslate2.StorageView,
    content_frames: list[int],
) -> list[float]:
    """Where each window's text ends, in seconds from the window's start, by Whisper's alignment heads.

    `model` is the CTranslate2 Whisper model; `texts` are text tokens (no timestamps, no end of text).
    """
    if not texts:
        return []
    # The whole text is aligned, not only its last tokens: without the words before them, the alignment
    # heads can place a text's last words early in the chunk, and the chunk's text is then decoded twice
    # (a streamed 65 s reading, tiny.en: 57 errors against 1).
    results = model.align(encoded, sot_sequence, texts, content_frames, median_filter_width=7)
    ends = []
    for result, frames in zip(results, content_frames, strict=True):
        pairs = np.asarray(result.alignments)
        if pairs.size == 0:
            ends.append(frames * HOP_SECONDS)
            continue
        # The alignment path must reach the window's end, so the last token is stretched over whatever
        # audio the text left out: where the last text token starts is where the text really ends.
        last_token = max(pairs[:, 0].max() - 1, 0)
        steps = pairs[pairs[:, 0] == last_token, 1]
        ends.append(float(steps.min()) * 2 * HOP_SECONDS)
    return ends


def uncovered_starts(
    model: Any,
    sot_sequence: list[int],
    texts: list[list[int]],
    encoded: ctranslate2.StorageView,
    content_frames: list[int],
) -> list[float | None]:
    """For each window, the second (from its start) where its text ends when that leaves at least
    `UNCOVERED_SECONDS` of the window unsaid, else None."""
    ends = text_ends(model, sot_sequence, texts, encoded, content_frames)
    return [
        end if frames * HOP_SECONDS - end >= UNCOVERED_SECONDS else None
        for end, frames in zip(ends, content_frames, strict=True)
    ]
