"""
The bare baseline's ASGI application for WebSockets: Django's own ASGI handler for HTTP, and
a minimal Channels consumer that echoes every text message to its group, sender included,
at /ws/echo/<room>/. No origin check, no auth middleware, no limits, no JSON.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_settings")
django_application = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.group = "bare.{}".format(self.scope["url_route"]["kwargs"]["room"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(self.group, {"type": "echo", "text": text_data})

    async def echo(self, event):
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter([path("ws/echo/<str:room>/", EchoConsumer.as_asgi())]),
    }
)
