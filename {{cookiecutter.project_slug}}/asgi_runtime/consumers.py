"""Project-wide WebSocket consumers: the feature apps have their own."""

import logging

from channels.generic.websocket import AsyncWebsocketConsumer

logger = logging.getLogger(__name__)


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake (HTTP 403) on a path that no route claims."""

    async def connect(self):
        # As Django logs a 404: one warning line.
        logger.warning("WebSocket Not Found: %s", self.scope["path"])
        await self.close()
