"""
The ASGI lifespan protocol: the server's "starting up" and "shutting down" messages.

Neither Django's ASGI handler nor Channels' ProtocolTypeRouter answers them, so uvicorn and
hypercorn would log a warning at every start ("lifespan protocol appears unsupported").
Acknowledging both here keeps every server quiet. Work that must happen once per process
(warming a cache, opening or closing a client) belongs here too. daphne does not send them.
{%- if cookiecutter.websockets %}

It also tells open WebSocket connections that the server is stopping (a deploy or a
development reload), through `stopping()`, so that they close with "service restart"
(SERVICE_RESTART in limits.py) and clients reconnect: the servers themselves send 1011
(hypercorn, which then waits for the client), nothing at all (granian, daphne) or 1012
(uvicorn). The shutdown message comes too late for that (once the connections are gone, or
never): the signal the server receives is watched instead, alongside the server's own
handler.
{%- endif %}

https://asgi.readthedocs.io/en/latest/specs/lifespan.html
"""
{%- if cookiecutter.websockets %}

import asyncio
import contextlib
import os
import signal
import threading
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}

from asgiref.sync import sync_to_async
from django.db import connections
{%- endif %}
{%- if cookiecutter.websockets %}

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long the server's own handler of a stop signal waits for the open WebSockets to close.
CLOSE_SECONDS = 5
# This process's "stopping" future, on the loop that serves it, and its open WebSockets.
_stopping = None
_open: set[object] = set()


def stopping():
    """A future of the running loop, done once this process is asked to stop."""
    global _stopping
    loop = asyncio.get_running_loop()
    if _stopping is not None and _stopping.get_loop() is loop:
        return _stopping
    _stopping = future = loop.create_future()
    # Only the main thread may set signal handlers; every server runs its loop there.
    if threading.current_thread() is threading.main_thread():
        for number in STOP_SIGNALS:
            previous = signal.getsignal(number)
            signal.signal(number, _signal_handler(loop, future, previous))
    return future


@contextlib.contextmanager
def open_websocket():
    """Around a WebSocket connection: a stop signal reaches the server's handler once every
    such connection has closed (at most CLOSE_SECONDS later)."""
    token = object()
    _open.add(token)
    try:
        yield
    finally:
        _open.discard(token)


def _signal_handler(loop, future, previous):
    def handler(number, frame):
        try:
            loop.call_soon_threadsafe(_set, future)
            loop.call_soon_threadsafe(lambda: loop.create_task(_then(previous, number, frame)))
        except RuntimeError:  # The loop is closed: nothing is open any more.
            _chain(previous, number, frame)

    return handler


async def _then(previous, number, frame):
    """The server's own handler, once the WebSockets are closed: uvicorn's and daphne's would
    otherwise cut them first. hypercorn's and granian's run from their event loop, which the
    signal wakes up all the same: hypercorn waits for the connections anyway; granian may
    drop them before their close frames are out (granian issue 796)."""
    deadline = asyncio.get_running_loop().time() + CLOSE_SECONDS
    while _open and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    _chain(previous, number, frame)


def _chain(previous, number, frame):
    if callable(previous):
        previous(number, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)


def _set(future):
    if not future.done():
        future.set_result(None)
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}


def close_database_pool():
    # Django's PostgreSQL pool keeps threads of its own: stop them cleanly, rather than have
    # psycopg warn at exit that the pool was never closed. Only if this process opened one.
    connection = connections["default"]
    if connection.alias in getattr(connection, "_connection_pools", {}):
        connection.close_pool()  # type: ignore[attr-defined]  # PostgreSQL's connections only.
{%- endif %}


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
{%- if cookiecutter.websockets %}
            stopping()  # From now on, a stop signal reaches the open WebSockets.
{%- endif %}
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
{%- if cookiecutter.websockets %}
            _set(stopping())
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}
            await sync_to_async(close_database_pool, thread_sensitive=False)()
{%- endif %}
            await send({"type": "lifespan.shutdown.complete"})
            return
