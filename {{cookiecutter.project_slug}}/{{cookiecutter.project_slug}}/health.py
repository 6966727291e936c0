"""
Liveness (/healthz) and readiness (/readyz) probes.

Load balancers and orchestrators probe over plain HTTP, often with a pod IP as the Host, so
this middleware sits first and answers before host validation and the HTTPS redirect.
/healthz says the process is up; /readyz also checks the backing services and answers 503,
naming each one that is down, so that traffic goes elsewhere until they are back.
"""

import asyncio

from asgiref.sync import markcoroutinefunction, sync_to_async
{%- if cookiecutter.channel_layer == "redis" and cookiecutter.websockets %}
from django.conf import settings
{%- endif %}
from django.db import connection
from django.http import JsonResponse
{%- if cookiecutter.channel_layer == "redis" and cookiecutter.websockets %}
from redis.asyncio import Redis
{%- endif %}

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
{%- if cookiecutter.channel_layer == "redis" and cookiecutter.websockets %}


async def check_redis():
    client = Redis.from_url(settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()
{%- endif %}


CHECKS = {
    "database": check_database,
{%- if cookiecutter.channel_layer == "redis" and cookiecutter.websockets %}
    "redis": check_redis,
{%- endif %}
}


async def _status(check):
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check()
    except Exception:
        return "down"
    return "ok"


async def readiness():
    results = await asyncio.gather(*(_status(check) for check in CHECKS.values()))
    checks = dict(zip(CHECKS, results, strict=True))
    ready = all(result == "ok" for result in results)
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


class HealthCheckMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request):
        if request.path == "/healthz":
            return JsonResponse({"status": "ok"})
        if request.path == "/readyz":
            return await readiness()
        return await self.get_response(request)
