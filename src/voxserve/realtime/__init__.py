"""The Realtime API as pure session state machines: client events and audio in, server events out.

Nothing here touches a socket or imports `server/`: the WebSocket route pumps frames into a session
and sends what it emits; the decodes a session asks for are run by the route on the engines.
"""
