"""
Per-connection WebSocket limits, in front of every consumer: message size and message rate.

What one connection sends is counted for that connection alone: a message larger than
settings.WEBSOCKET_MAX_MESSAGE_BYTES closes it with code 4009, and sending faster than
settings.WEBSOCKET_MESSAGE_RATE messages a second, beyond a burst of
settings.WEBSOCKET_MESSAGE_BURST, closes it with 4008. (Codes 4000-4999 belong to applications;
these mirror 1009, message too big, and 1008, policy violation, which daphne does not let an
application send.) The consumer then sees an ordinary disconnection, and whatever it sends
after that is dropped rather than reported by the server as an error. Servers that limit
message size themselves (uvicorn, daphne, hypercorn) refuse oversized messages before they get
here, with their own codes; granian has no such setting.
"""

import time

from django.conf import settings

MESSAGE_TOO_BIG = 4009
POLICY_VIOLATION = 4008


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


class WebSocketLimits:
    """ASGI middleware: applies the limits above to WebSocket connections, passes the rest."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        bucket = TokenBucket(settings.WEBSOCKET_MESSAGE_RATE, settings.WEBSOCKET_MESSAGE_BURST)
        closed = False

        async def limited_receive():
            nonlocal closed
            message = await receive()
            if message["type"] != "websocket.receive" or closed:
                return message
            if size_of(message) > settings.WEBSOCKET_MAX_MESSAGE_BYTES:
                code = MESSAGE_TOO_BIG
            elif not bucket.take():
                code = POLICY_VIOLATION
            else:
                return message
            closed = True
            await send({"type": "websocket.close", "code": code})
            return {"type": "websocket.disconnect", "code": code}

        async def guarded_send(message):
            if not closed:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
