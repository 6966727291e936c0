"""WebSocket consumers and a consumer mixin for every project: the feature apps have their own."""

import asyncio
import contextlib
import logging

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake (HTTP 403) on a path that no route claims."""

    async def connect(self):
        # As Django logs a 404: one warning line.
        logger.warning("WebSocket Not Found: %s", self.scope["path"])
        await self.close()


class GroupMember(AsyncConsumer):
    """Mixin for a consumer that joins groups: however it ends (the client closing, the server
    closing, a crash, a send that timed out), it leaves the groups it joined with join() and
    drops its channel, with whatever messages it still holds.

    Channels drops a consumer's channel by cancelling its pending receive, and calls
    disconnect() only when the client's disconnection is dispatched. A consumer that ends with
    a message already received for it (a busy room), or that crashes, would otherwise leave its
    channel subscribed in Redis with a queue that grows with every message to its groups, and
    stay a member of those groups, for good (RedisPubSubChannelLayer), or for the in-memory
    layer's expiry (60 s).

    A layer whose server has stopped answering (Redis frozen or overloaded, packets dropped)
    would hold each handshake until its socket timeout: the handshake is refused instead when
    the layer has not answered within `layer_timeout` seconds, and so is a join() that takes
    longer (it raises TimeoutError).
    """

    layer_timeout = 2.0

    async def __call__(self, scope, receive, send):
        self.joined = set()
        if not await self.layer_answers(get_channel_layer(self.channel_layer_alias)):
            logger.warning("channel layer not answering, refusing a connection")
            await receive()  # websocket.connect
            await send({"type": "websocket.close"})  # HTTP 403
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: the server may be cancelling this consumer, and this must still run.
            await asyncio.shield(self.release_channel())

    async def layer_answers(self, layer):
        """A round trip to the layer's server, before this connection takes a channel: a message
        to a group no one joins, which every layer accepts and keeps nothing of."""
        try:
            async with asyncio.timeout(self.layer_timeout):
                await layer.group_send("asgi_runtime.probe", {"type": "probe"})
        except Exception:  # Timed out, or whatever the layer raises when its server is down.
            return False
        return True

    async def join(self, group):
        self.joined.add(group)  # First: a join cut short is undone too, when the consumer ends.
        async with asyncio.timeout(self.layer_timeout):
            await self.channel_layer.group_add(group, self.channel_name)

    async def leave(self, group):
        self.joined.discard(group)
        await self.channel_layer.group_discard(group, self.channel_name)

    async def release_channel(self):
        layer, channel = getattr(self, "channel_layer", None), getattr(self, "channel_name", None)
        if layer is None or channel is None:
            return
        for group in list(self.joined):
            with contextlib.suppress(Exception):  # A layer that is down forgets on its own.
                await self.leave(group)
        # Channel layers have no call to drop a channel: a receive cancelled while it waits does
        # it. Take what is queued first, so that the last receive waits (bounded: 1 s).
        deadline = asyncio.get_running_loop().time() + 1
        while channel in getattr(layer, "channels", ()):
            if asyncio.get_running_loop().time() > deadline:
                logger.warning("channel %s still held messages after 1 s: left", channel)
                return
            try:
                await asyncio.wait_for(layer.receive(channel), 0.05)
            except TimeoutError:
                return
            except Exception:  # A layer that is down drops its subscriptions itself.
                return
