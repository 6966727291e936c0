"""
The ASGI lifespan protocol: the server's "starting up" and "shutting down" messages.

Neither Django's ASGI handler nor Channels' ProtocolTypeRouter answers them, so uvicorn and
hypercorn would log a warning at every start ("lifespan protocol appears unsupported").
Acknowledging both here keeps every server quiet. Work that must happen once per process
(warming a cache, opening or closing a client) belongs here too. daphne does not send them.

https://asgi.readthedocs.io/en/latest/specs/lifespan.html
"""
{%- if cookiecutter.database == "postgresql" %}

from asgiref.sync import sync_to_async
from django.db import connections


def close_database_pool():
    # Django's PostgreSQL pool keeps threads of its own: stop them cleanly, rather than have
    # psycopg warn at exit that the pool was never closed. Only if this process opened one.
    connection = connections["default"]
    if connection.alias in getattr(connection, "_connection_pools", {}):
        connection.close_pool()
{%- endif %}


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
{%- if cookiecutter.database == "postgresql" %}
            await sync_to_async(close_database_pool, thread_sensitive=False)()
{%- endif %}
            await send({"type": "lifespan.shutdown.complete"})
            return
