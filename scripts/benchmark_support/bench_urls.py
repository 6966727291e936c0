"""The benchmark's views, the same in both projects, before the project's own URLs."""

from django.conf import settings
from django.contrib.auth import SESSION_KEY, authenticate, login
from django.http import HttpResponseForbidden, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


async def hello(request):
    """The trivial view: async, no database, no session."""
    return JsonResponse({"hello": "world"})


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
    path("bench/json/", hello),
    path("bench/login/", log_in),
    path("bench/session/", whoami),
    path("", include(settings.PROJECT_URLCONF)),
]
