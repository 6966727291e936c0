"""
Per-connection WebSocket limits, in front of every consumer: message size, message rate, and
how long a client may leave what is sent to it unread.

What one connection sends is counted for that connection alone: a message larger than
settings.WEBSOCKET_MAX_MESSAGE_BYTES closes it with code 4009, and sending faster than
settings.WEBSOCKET_MESSAGE_RATE messages a second, beyond a burst of
settings.WEBSOCKET_MESSAGE_BURST, closes it with 4008. (Codes 4000-4999 belong to applications;
these mirror 1009, message too big, and 1008, policy violation, which daphne does not let an
application send.) The consumer then sees an ordinary disconnection, and whatever it sends
after that is dropped rather than reported by the server as an error. Servers that limit
message size themselves (uvicorn, daphne, hypercorn) refuse oversized messages before they get
here, with their own codes; granian has no such setting.

A client that stops reading (a stalled network, a frozen or hostile client) fills the buffers
between it and the server, and then the server's sends wait. The kernel ends such a connection:
the server's sockets get settings.WEBSOCKET_SEND_TIMEOUT as TCP_USER_TIMEOUT (Linux), which
resets a connection whose peer has acknowledged nothing, or kept its receive window shut, for
that long; the server then reports a disconnection as for any client that leaves. (The server
cannot close it itself: closing waits for the buffered bytes to go out, which never happens.)
The same sockets get TCP keepalive, probing a connection idle for that long: a client that
vanished without a word (a dropped network, a laptop closed) is then noticed too, within about
twice that time, even in a quiet room and on servers that send no WebSocket pings.
Where those options are missing, a send that still waits after the same time is given up, and
nothing more is sent to that connection: the consumer goes on serving its other clients and
nothing piles up for this one, but the connection stays open until the client leaves.

When the server is asked to stop (a deploy, a development reload), every connection is closed
with SERVICE_RESTART and its consumer sees an ordinary disconnection (lifespan.py).
"""

import asyncio
import contextlib
import logging
import os
import socket
import time

from django.conf import settings

from .lifespan import open_websocket, stopping

logger = logging.getLogger(__name__)

MESSAGE_TOO_BIG = 4009
POLICY_VIOLATION = 4008
{%- if cookiecutter.server == "daphne" %}
# "Service restart" is 1012, which daphne does not let an application send either: 4012.
SERVICE_RESTART = 4012
{%- else %}
SERVICE_RESTART = 1012
{%- endif %}
# How long a stopping server waits for a client's answer to its close.
STOP_SECONDS = 5


def size_of(message):
    """The bytes a "websocket.receive" message carries (text counts as UTF-8)."""
    if message.get("text") is not None:
        return len(message["text"].encode(errors="surrogatepass"))
    return len(message.get("bytes") or b"")


class TokenBucket:
    """`rate` tokens a second, `burst` at most: take() is False once they are spent."""

    def __init__(self, rate, burst):
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class PeerTimeouts:
    """Sets TCP_USER_TIMEOUT and keepalive, once per port, on this process's TCP sockets of the
    server's port: the listening ones, whose later connections inherit them, and those already
    accepted. ASGI gives an application no socket: they are found among the process's
    descriptors."""

    def __init__(self):
        self.ports_done = set()

    def apply(self, scope, seconds):
        option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux only
        if option is None or not scope.get("server") or scope["server"][1] is None:
            return  # a Unix socket, or another system
        port = int(scope["server"][1])  # granian gives it as a string
        if port in self.ports_done:
            return
        self.ports_done.add(port)
        try:
            descriptors = os.listdir("/proc/self/fd")
        except OSError:
            return  # no /proc
        for fd in descriptors:
            duplicate = None
            try:
                if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                    continue
                # Through a duplicate descriptor: options belong to the socket, not the descriptor.
                duplicate = os.dup(int(fd))
                sock = socket.socket(fileno=duplicate)
            except OSError:  # closed meanwhile
                if duplicate is not None:
                    os.close(duplicate)
                continue
            with sock, contextlib.suppress(OSError):
                if sock.family in (socket.AF_INET, socket.AF_INET6) and (
                    sock.type == socket.SOCK_STREAM and sock.getsockname()[1] == port
                ):
                    sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    idle = max(1, round(seconds))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle)


peer_timeouts = PeerTimeouts()


class WebSocketLimits:
    """ASGI middleware: applies the limits above to WebSocket connections, passes the rest."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        peer_timeouts.apply(scope, settings.WEBSOCKET_SEND_TIMEOUT)
        bucket = TokenBucket(settings.WEBSOCKET_MESSAGE_RATE, settings.WEBSOCKET_MESSAGE_BURST)
        closed = cut_off = accepted = False
        stop = stopping()
        pending = None  # The server's receive() being waited for, kept across a stop's wake-up.

        async def next_message():
            """The server's next message, or None once the server is stopping (the connection
            accepted: a consumer expects its connect first)."""
            nonlocal pending
            if pending is None:
                pending = asyncio.ensure_future(receive())
            if not accepted:
                await asyncio.wait({pending})
            elif not pending.done() and not stop.done():
                await asyncio.wait({pending, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                return None
            message, pending = pending.result(), None
            return message

        async def limited_receive():
            nonlocal closed, cut_off
            message = await next_message() if not closed else await receive_rest()
            if message is None:
                closed = cut_off = True
                await send({"type": "websocket.close", "code": SERVICE_RESTART})
                return {"type": "websocket.disconnect", "code": SERVICE_RESTART}
            if message["type"] == "websocket.disconnect":
                closed = True  # Whatever the consumer sends now is dropped (see above).
            if message["type"] != "websocket.receive" or closed:
                return message
            if size_of(message) > settings.WEBSOCKET_MAX_MESSAGE_BYTES:
                code = MESSAGE_TOO_BIG
            elif not bucket.take():
                code = POLICY_VIOLATION
            else:
                return message
            closed = cut_off = True
            await send({"type": "websocket.close", "code": code})
            return {"type": "websocket.disconnect", "code": code}

        async def receive_rest():
            nonlocal pending
            if pending is None:
                return await receive()
            message, pending = await pending, None
            return message

        async def guarded_send(message):
            nonlocal closed, accepted
            if closed:
                return
            accepted = accepted or message["type"] == "websocket.accept"
            try:
                async with asyncio.timeout(settings.WEBSOCKET_SEND_TIMEOUT):
                    await send(message)
            except TimeoutError:
                logger.warning("WebSocket client %s stopped reading: dropped", scope["client"])
                closed = True
            except OSError:
                closed = True  # Gone meanwhile (the ASGI spec's error); receive() will say so.
            except RuntimeError as error:
                # uvicorn's word for a connection it closed itself (a ping timeout, say).
                if "websocket.close" not in str(error):
                    raise
                closed = True

        try:
            with open_websocket():
                await self.app(scope, limited_receive, guarded_send)
                if cut_off:
                    # The consumer is done, but the client may still be sending, and its answer
                    # to the close is still to come: read until it arrives, as the consumer
                    # would have. A server whose queue of unread messages fills up (hypercorn)
                    # stops reading the connection altogether, and would never see that answer.
                    seconds = STOP_SECONDS if stop.done() else settings.WEBSOCKET_SEND_TIMEOUT
                    with contextlib.suppress(TimeoutError, OSError):
                        async with asyncio.timeout(seconds):
                            while (await receive_rest())["type"] != "websocket.disconnect":
                                pass
        finally:
            if pending is not None:
                pending.cancel()
