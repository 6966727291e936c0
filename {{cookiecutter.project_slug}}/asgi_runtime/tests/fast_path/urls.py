"""Test-only views, in front of the project's own URLs (test_fast_path.py sets ROOT_URLCONF)."""

import asyncio
import threading
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

# The project's URLs, behind these (test_fast_path.py makes this module ROOT_URLCONF).
PROJECT_URLCONF = settings.ROOT_URLCONF
# What the views saw, for the tests to read: (event, thread) in order, and more.
EVENTS: list[tuple[str, threading.Thread]] = []
SEEN: dict[str, Any] = {}
# Cleared, it holds the slow view back until it is set again.
SLOW_VIEW_MAY_FINISH = threading.Event()
SLOW_VIEW_MAY_FINISH.set()


async def async_view(request):
    return JsonResponse({"ok": True})


def sync_view(request):
    return JsonResponse({"ok": True})


def token(request):
    return JsonResponse({"token": get_token(request)})


def form(request):
    return JsonResponse({"fields": sorted(request.POST), "files": sorted(request.FILES)})


async def async_form(request):
    return JsonResponse({"fields": sorted(request.POST), "files": sorted(request.FILES)})


@csrf_exempt
def body_size(request):
    return JsonResponse({"bytes": len(request.body)})


def whoami(request):
    return JsonResponse({"user": request.user.get_username()})


async def async_whoami(request):
    user = await request.auser()
    return JsonResponse({"user": user.get_username()})


def counter(request):
    request.session["n"] = request.session.get("n", 0) + 1
    return JsonResponse({"n": request.session["n"]})


async def async_counter(request):
    n = await request.session.aget("n", 0) + 1
    await request.session.aset("n", n)
    return JsonResponse({"n": n})


def add_message(request):
    messages.info(request, "from a sync view")
    return redirect("/fast/messages/")


async def async_add_message(request):
    messages.info(request, "from an async view")
    return redirect("/fast/messages/")


def show_messages(request):
    return JsonResponse({"messages": [str(message) for message in messages.get_messages(request)]})


def slow(request):
    EVENTS.append(("view", threading.current_thread()))
    time.sleep(float(request.GET.get("seconds", 0)))
    SLOW_VIEW_MAY_FINISH.wait(timeout=10)
    EVENTS.append(("view done", threading.current_thread()))
    return JsonResponse({"ok": True})


async def background(request):
    """Starts a task that outlives the request, then calls sync code."""

    async def later():
        await asyncio.sleep(0.01)
        try:
            SEEN["late call"] = await sync_to_async(threading.current_thread)()
        except RuntimeError as error:
            SEEN["late call"] = error

    SEEN["task"] = asyncio.create_task(later())
    return HttpResponse()


# State a careless view leaves in its thread, for the next request to find (or not).
current = threading.local()


def leave_state(request):
    current.user = request.GET.get("user", "alice")
    connection.tenant = current.user  # type: ignore[attr-defined]
    return JsonResponse({"left": current.user})


def read_state(request):
    return JsonResponse(
        {
            "thread user": getattr(current, "user", None),
            "connection tenant": getattr(connection, "tenant", None),
        }
    )


def leave_transaction_open(request):
    transaction.atomic().__enter__()  # Never exited.
    get_user_model().objects.count()
    if connection.vendor == "sqlite":
        # For the test to close: Django never closes a connection to an in-memory database.
        SEEN.setdefault("left open", []).append(connection.connection)
    return JsonResponse({"open": connection.in_atomic_block})


def count_users(request):
    return JsonResponse({"users": get_user_model().objects.count()})


def stream(request):
    async def chunks():
        for n in range(int(request.GET.get("chunks", "3"))):
            yield f"data: {n}\n\n".encode()
            await asyncio.sleep(float(request.GET.get("every", "0")))

    return StreamingHttpResponse(chunks(), content_type="text/event-stream")


urlpatterns = [
    path("fast/async/", async_view),
    path("fast/sync/", sync_view),
    path("fast/token/", token),
    path("fast/form/", form),
    path("fast/async-form/", async_form),
    path("fast/body-size/", body_size),
    path("fast/whoami/", whoami),
    path("fast/async-whoami/", async_whoami),
    path("fast/counter/", counter),
    path("fast/async-counter/", async_counter),
    path("fast/add-message/", add_message),
    path("fast/async-add-message/", async_add_message),
    path("fast/messages/", show_messages),
    path("fast/slow/", slow),
    path("fast/background/", background),
    path("fast/leave-state/", leave_state),
    path("fast/read-state/", read_state),
    path("fast/leave-transaction-open/", leave_transaction_open),
    path("fast/count-users/", count_users),
    path("fast/stream/", stream),
    path("", include(PROJECT_URLCONF)),
]
