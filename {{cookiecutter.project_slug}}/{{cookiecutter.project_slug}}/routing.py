"""
WebSocket routes: the urls.py of WebSocket connections, wired in by asgi.py.

https://channels.readthedocs.io/en/stable/topics/routing.html
"""

from importlib import import_module
from typing import Any

from django.urls import re_path

from asgi_runtime.consumers import NoRouteConsumer


def routes_of(module):
    """An app's WebSocket routes, named by module as urls.py names an app's URLs."""
    return import_module(module).websocket_urlpatterns


# (Any, and the ignore below: Django's stubs expect re_path() to route to views, and Channels'
# stubs expect URLRouter's routes to be of a type of their own; both route consumers here.)
websocket_urlpatterns: list[Any] = [
    *routes_of("rooms.routing"),
    # Last: refuse every other path, "/" included, instead of URLRouter's "No route found".
    re_path(r"", NoRouteConsumer.as_asgi()),  # type: ignore[arg-type]
]
