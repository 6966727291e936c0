"""The benchmark's views, the same in both projects, before the project's own URLs."""

import asyncio

from django.conf import settings
from django.contrib.auth import SESSION_KEY, authenticate, login
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse, StreamingHttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

BIG_BODY = b"0123456789abcdef" * (4 * 1024 * 1024 // 16)  # 4 MiB, built once
SSE_EVENTS = 600  # a stream ends by itself after about 10 minutes


async def hello(request):
    """The trivial view: async, no database, no session."""
    return JsonResponse({"hello": "world"})


async def healthz(request):
    """The bare project's /healthz, with the template's body. The template answers /healthz
    before its URLs (asgi_runtime/health.py), so this route only reaches the bare project."""
    return JsonResponse({"status": "ok"})


async def big(request):
    """4 MiB for the slow clients that never read it (one shared bytes object)."""
    return HttpResponse(BIG_BODY, content_type="application/octet-stream")


async def events(request):
    """Server-sent events: a small event about every second, for at most SSE_EVENTS seconds."""

    async def stream():
        yield ": open\n\n"
        for number in range(SSE_EVENTS):
            await asyncio.sleep(1)
            yield f"data: {number}\n\n"

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


@csrf_exempt
def log_in(request):
    """Log the POSTed username and password in once: the benchmark keeps the session cookie."""
    user = authenticate(
        request, username=request.POST.get("username"), password=request.POST.get("password")
    )
    if user is None:
        return HttpResponseForbidden("wrong credentials")
    login(request, user)
    return JsonResponse({"user": user.get_username()})


def whoami(request):
    """A logged-in page's work: a sync view that reads request.session and request.user."""
    return JsonResponse(
        {
            "user": request.user.get_username(),
            "authenticated": request.user.is_authenticated,
            "session_user_id": request.session.get(SESSION_KEY),
        }
    )


urlpatterns = [
    path("healthz", healthz),
    path("bench/json/", hello),
    path("bench/big/", big),
    path("bench/sse/", events),
    path("bench/login/", log_in),
    path("bench/session/", whoami),
    path("", include(settings.PROJECT_URLCONF)),
]
