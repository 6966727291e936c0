"""
The rooms' WebSocket routes, included by the project's routing.py.

https://channels.readthedocs.io/en/stable/topics/routing.html
"""

from django.urls import re_path

from . import consumers

websocket_urlpatterns = [
    # Room names become channel-layer group names, which allow ASCII letters, digits, "-",
    # "_" and "." only: anything else falls through to the project's refusal. (The ignore:
    # Django's stubs expect re_path() to route to views; Channels routes to consumers with it.)
    re_path(r"^ws/rooms/(?P<room>[A-Za-z0-9_-]{1,64})/$", consumers.RoomConsumer.as_asgi()),  # type: ignore[arg-type]
]
