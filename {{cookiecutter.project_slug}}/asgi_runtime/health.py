"""
Liveness (/healthz) and readiness (/readyz) probes.

Load balancers and orchestrators probe over plain HTTP, often with a pod IP as the Host, so
handler.py answers them before Django: before host validation and the HTTPS redirect, and
without a request thread, so that a probe never waits behind application requests.
/healthz says the process is up; /readyz also checks the backing services and answers 503,
naming each one that is down, so that traffic goes elsewhere until they are back, and logs
why in one warning line.
"""

import asyncio
{%- if cookiecutter.channel_layer == "redis" %}
import contextlib
from typing import Any
{%- endif %}

from asgiref.sync import sync_to_async
{%- if cookiecutter.channel_layer == "redis" %}
from channels.layers import get_channel_layer
from django.core.cache import cache
{%- endif %}
from django.db import connection
from django.http import JsonResponse
from django.utils.log import log_response

from .checks import missing_static_manifest

# A probe that hangs is as bad as one that fails: give up after this many seconds.
CHECK_TIMEOUT = 3


def _query_database():
    # In a thread of its own (see below), so close the connection it opened when done.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


async def check_database():
    # thread_sensitive=False: a hung database must not block the request's own thread.
    await sync_to_async(_query_database, thread_sensitive=False)()
{%- if cookiecutter.channel_layer == "redis" %}


async def check_redis():
    # The cache: on the same Redis, through connections of its own.
    await sync_to_async(cache.get, thread_sensitive=False)("readyz")
    # The channel layer: a message must make the round trip that room messages make, published
    # to Redis and back through this process's subscription. A fresh connection's PING would
    # say "ok" even while the layer's receive loop is dead.
    # Any: RedisPubSubChannelLayer (settings.py), which channels-redis ships no types for.
    layer: Any = get_channel_layer()
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    await layer.receive(channel)
    # Channel layers have no call to drop a channel: a receive cancelled while it waits does
    # it, as when a consumer closes. (On a timeout above, the cancelled receive did it.)
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
{%- endif %}


async def check_static_files():
    missing = missing_static_manifest()
    if missing is not None:
        raise FileNotFoundError(f"{missing} is missing: run collectstatic")


CHECKS = {
    "database": check_database,
    "static files": check_static_files,
{%- if cookiecutter.channel_layer == "redis" %}
    "redis": check_redis,
{%- endif %}
}


async def problem_with(check):
    """What is wrong with a backing service, or None."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check()
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT} s"
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


async def readiness():
    problems = await asyncio.gather(*(problem_with(check) for check in CHECKS.values()))
    down = {name: problem for name, problem in zip(CHECKS, problems, strict=True) if problem}
    response = JsonResponse(
        {
            "status": "unavailable" if down else "ok",
            "checks": {name: "down" if name in down else "ok" for name in CHECKS},
        },
        status=503 if down else 200,
    )
    if down:
        # One warning with the reasons, instead of Django's "Service Unavailable" error line.
        reasons = "; ".join(f"{name}: {problem}" for name, problem in down.items())
        log_response("Not ready: %s", reasons, response=response, level="warning")
    return response


async def liveness():
    return JsonResponse({"status": "ok"})


def probe(answer):
    """An ASGI application that sends `answer()`'s response (HEAD: without its body)."""

    async def application(scope, receive, send):
        response = await answer()
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
        ]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        body = b"" if scope["method"] == "HEAD" else response.content
        await send({"type": "http.response.body", "body": body})

    return application


PROBES = {"/healthz": probe(liveness), "/readyz": probe(readiness)}
