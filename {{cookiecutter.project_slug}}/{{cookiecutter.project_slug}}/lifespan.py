"""
The ASGI lifespan protocol: the server's "starting up" and "shutting down" messages.

Neither Django's ASGI handler nor Channels' ProtocolTypeRouter answers them, so uvicorn and
hypercorn would log a warning at every start ("lifespan protocol appears unsupported").
Acknowledging both here keeps every server quiet. Work that must happen once per process
(warming a cache, opening a client) belongs here too.

https://asgi.readthedocs.io/en/latest/specs/lifespan.html
"""


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
