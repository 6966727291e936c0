"""Test-only views beside the project's own URLs: what Django sees of the client, what the
channel layer holds, a slow request to stop a server in the middle of, and the views that
test_request_path.py drives the request path with (large and endless responses, state left
behind in a request's thread, an open transaction, sync views that hold their thread), and a
view and a WebSocket consumer that fail (test_error_reporting.py)."""

import asyncio
import contextlib
import os
import threading
import time
import urllib.request
from importlib import import_module
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

# The slow view touches this file once a request is inside it.
SLOW_REQUEST_STARTED = Path(os.environ.get("PROBE_SLOW_MARKER", "/nonexistent"))
# The holding view appends its name to HOLD_DIR/ran when it runs, and holds its thread until
# HOLD_DIR/release exists.
HOLD_DIR = Path(os.environ.get("PROBE_HOLD_DIR", "/nonexistent"))
# State a request may leave in its thread, which no other request may see.
LEFT_BEHIND = threading.local()


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


def sync_view(request):
    return JsonResponse({"view": "sync"})


async def async_view(request):
    return JsonResponse({"view": "async"})


def large(request):
    """A sync view's response of ?bytes= (4 MiB by default), for clients that never read it."""
    size = int(request.GET.get("bytes", 4 * 1024 * 1024))
    return HttpResponse(b"x" * size, content_type="application/octet-stream")


async def events(request):
    """A server-sent event stream: an event every ?interval= seconds for ?seconds= (60)."""
    interval = float(request.GET.get("interval", "0.5"))
    seconds = float(request.GET.get("seconds", "60"))

    async def stream():
        yield b": open\n\n"
        for number in range(int(seconds / interval)):
            await asyncio.sleep(interval)
            yield b"data: %d\n\n" % number

    return StreamingHttpResponse(stream(), content_type="text/event-stream")


def leave_state_behind(label):
    LEFT_BEHIND.label = label
    connection.probe_left_behind = label
    threading.current_thread().probe_left_behind = label


def leave_state(request):
    """Leaves state in the request's thread and on its database connection."""
    leave_state_behind(request.GET.get("label", "left"))
    return JsonResponse({"left": True})


async def leave_state_from_async(request):
    """The same from an async view, through sync_to_async (the request's thread)."""
    await sync_to_async(leave_state_behind)(request.GET.get("label", "left"))
    return JsonResponse({"left": True})


def state(request):
    """What this request's thread and database connection hold that it did not put there."""
    return JsonResponse(
        {
            "local": getattr(LEFT_BEHIND, "label", None),
            "connection": getattr(connection, "probe_left_behind", None),
            "thread": getattr(threading.current_thread(), "probe_left_behind", None),
        }
    )


def open_transaction(request):
    """Enters a transaction and never leaves it, then queries."""
    from django.contrib.auth import get_user_model

    transaction.atomic().__enter__()
    return JsonResponse({"users": get_user_model().objects.count()})


def hold(request):
    """Holds its thread until HOLD_DIR/release exists (at most ?seconds=, 30); with ?database,
    its database connection too."""
    if "database" in request.GET:
        from django.contrib.auth import get_user_model

        get_user_model().objects.count()
    with open(HOLD_DIR / "ran", "a") as ran:
        ran.write(request.GET["name"] + "\n")
    deadline = time.monotonic() + float(request.GET.get("seconds", "30"))
    while not (HOLD_DIR / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return JsonResponse({"held": request.GET["name"]})


@csrf_exempt
def fail(request):
    """Raises, once it has read the form it was sent (for the error reporting tests)."""
    fields = sorted(request.POST)
    raise RuntimeError(f"probe failure in a view: {request.GET.get('marker')} {fields}")


def call_self(request):
    """A sync view that calls its own server over HTTP (a webhook to itself, say)."""
    port = request.get_port()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/probe/sync", timeout=30) as answer:
        return JsonResponse({"inner": answer.status})


urlpatterns = [
    path("probe/client", client),
    path("probe/slow", slow),
    path("probe/groups", groups),
    path("probe/database", database),
    path("probe/sync", sync_view),
    path("probe/async", async_view),
    path("probe/large", large),
    path("probe/events", events),
    path("probe/leave-state", leave_state),
    path("probe/leave-state-from-async", leave_state_from_async),
    path("probe/state", state),
    path("probe/open-transaction", open_transaction),
    path("probe/hold", hold),
    path("probe/call-self", call_self),
    path("probe/fail", fail),
    path("", include(settings.PROJECT_URLCONF)),
]

# The project's WebSocket routes (the list its asgi.py routes with), when it has them, and a
# consumer that fails.
with contextlib.suppress(ImportError):
    routing = import_module(f"{os.environ['PROBED_PROJECT']}.routing")
    from channels.generic.websocket import AsyncWebsocketConsumer

    class FailingConsumer(AsyncWebsocketConsumer):
        """ws/probe/fail/: raises on the first message it receives."""

        async def receive(self, text_data=None, bytes_data=None):
            raise RuntimeError(f"probe failure in a consumer: {text_data}")

    # First: the last route refuses every other path.
    routing.websocket_urlpatterns.insert(0, path("ws/probe/fail/", FailingConsumer.as_asgi()))
