from django.shortcuts import render


def index(request):
    """A page to try a room from the browser: open it in two tabs and talk to yourself."""
    return render(request, "rooms/index.html")
