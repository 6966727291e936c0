"""Project-wide WebSocket consumers: the feature apps have their own."""

from channels.generic.websocket import AsyncWebsocketConsumer


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake (HTTP 403) on a path that no route claims."""

    async def connect(self):
        await self.close()
