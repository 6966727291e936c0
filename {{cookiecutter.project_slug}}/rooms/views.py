from django.conf import settings
from django.shortcuts import render

from .models import Room


def index(request):
    """A page to try a room from the browser: open it in two tabs and talk to yourself."""
    must_log_in = settings.ROOMS_REQUIRE_LOGIN and not request.user.is_authenticated
    # Counted by a background task as members leave (tasks.py).
    busiest = Room.objects.filter(messages__gt=0).order_by("-messages")[:5]
    return render(request, "rooms/index.html", {"must_log_in": must_log_in, "busiest": busiest})
