"""
WebSocket routes: the urls.py of WebSocket connections, wired in by asgi.py.

https://channels.readthedocs.io/en/stable/topics/routing.html
"""

from django.urls import re_path
from django.utils.module_loading import import_string

from .consumers import NoRouteConsumer

websocket_urlpatterns = [
    *import_string("rooms.routing.websocket_urlpatterns"),
    # Last: refuse every other path, "/" included, instead of URLRouter's "No route found".
    re_path(r"", NoRouteConsumer.as_asgi()),
]
