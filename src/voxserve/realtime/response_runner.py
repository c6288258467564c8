"""Runs a conversation's `ResponseJob`: the chat backend's answer through the spoken-reply pipeline,
each event handed back to the session. Cancelling the task stops generation and synthesis at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from voxserve.engines.spoken_reply import SpokenReply
from voxserve.realtime.conversation import ConversationSession, ResponseJob
from voxserve.realtime.conversations import Conversations

# Calls `fn(*args)` on the session with the driver's lock held, then sends what it produced.
Deliver = Callable[..., Awaitable[None]]


async def run_response(
    engines: Conversations, session: ConversationSession, job: ResponseJob, deliver: Deliver
) -> None:
    reply: SpokenReply | None = None
    try:
        reply = await engines.spoken.open(engines.chat, job.body, job.voice, job.speed)
        async with contextlib.aclosing(reply.events()) as events:
            async for event in events:
                await deliver(session.reply_event, job.response_id, event)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an `error` event and a failed `response.done`; the session goes on
        await deliver(session.reply_failed, job.response_id, exc)
    finally:
        if reply is not None:
            await reply.aclose()
