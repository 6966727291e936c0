"""Test-only views beside the project's own URLs: what Django sees of the client, what the
channel layer holds, and a slow request to stop a server in the middle of."""

import asyncio
import os
from pathlib import Path

from django.conf import settings
from django.http import JsonResponse
from django.urls import include, path

# The slow view touches this file once a request is inside it.
SLOW_REQUEST_STARTED = Path(os.environ.get("PROBE_SLOW_MARKER", "/nonexistent"))


async def client(request):
    return JsonResponse({"address": request.META["REMOTE_ADDR"], "scheme": request.scheme})


async def groups(request):
    """How many consumers each group of this process's channel layer holds."""
    from channels.layers import get_channel_layer

    # InMemoryChannelLayer.groups, or (passed through) the Redis pub/sub layer's own.
    members = get_channel_layer().groups
    return JsonResponse(
        {name.removeprefix("asgi__group__"): len(channels) for name, channels in members.items()}
    )


def database(request):
    """A request that needs the database, through the project's connection settings."""
    from django.contrib.auth import get_user_model

    return JsonResponse({"users": get_user_model().objects.count()})


async def slow(request):
    SLOW_REQUEST_STARTED.touch()
    await asyncio.sleep(float(request.GET.get("seconds", "2")))
    return JsonResponse({"slept": True})


urlpatterns = [
    path("probe/client", client),
    path("probe/slow", slow),
    path("probe/groups", groups),
    path("probe/database", database),
    path("", include(settings.PROJECT_URLCONF)),
]
