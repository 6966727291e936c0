"""
WebSocket consumers: the views of WebSocket connections.

A client of /ws/rooms/<room>/ sends {"message": "<text>"}; everyone in the room, sender
included, receives {"message": "<text>", "user": "<username>" or null}, as UTF-8 text. With
ROOMS_REQUIRE_LOGIN (on in production), a connection that is not signed in is accepted and closed
at once with code 4401 (LOGIN_REQUIRED), which tells a page to offer sign-in instead of
reconnecting (a refused handshake would reach it as 1006, like a network failure). Anything
else gets {"error": "..."} and the connection stays open, and so does a message whose broadcast
would be larger than WEBSOCKET_MAX_MESSAGE_BYTES: servers close a connection that is sent more
(daphne does), so one member's message would close everyone's.

As a member leaves, a background task adds the messages it sent to the room's count, which
the page shows (tasks.py).

A message the channel layer did not confirm in time gets {"error": "...", "id": "<id>"}: it
may still reach the room (a Redis that was frozen, not down, delivers it when it wakes). Send
it again with that id, {"message": "<text>", "id": "<id>"}, and members who already have it
don't get it twice. A client may choose its ids itself (up to 64 characters); a message sent
with one is broadcast with it.

https://channels.readthedocs.io/en/stable/topics/consumers.html
"""

import asyncio
import collections
import json
import logging
import uuid

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
{%- if cookiecutter.channel_layer == "redis" %}
from redis.exceptions import RedisError
{%- endif %}

from asgi_runtime.consumers import GroupMember

from .tasks import count_messages

logger = logging.getLogger(__name__)

# The close code of a connection that must sign in first (4000 and up are the application's).
LOGIN_REQUIRED = 4401

{%- if cookiecutter.channel_layer == "redis" %}

# What the channel layer raises while Redis is unreachable.
CHANNEL_LAYER_ERRORS = (RedisError, OSError)
{%- else %}

# What the channel layer raises when it is unreachable: nothing, the in-memory layer lives in
# this process. A Redis layer raises redis.exceptions.RedisError and OSError.
CHANNEL_LAYER_ERRORS = ()
{%- endif %}


class RoomConsumer(GroupMember, AsyncJsonWebsocketConsumer):
    """GroupMember: however the connection ends, the consumer leaves its room."""

    recent: collections.deque[str]

    async def __call__(self, scope, receive, send):
        try:
            # Channels asks the layer for this connection's channel before the handshake.
            await super().__call__(scope, receive, send)
        except CHANNEL_LAYER_ERRORS:
            if hasattr(self, "channel_name"):
                raise
            # Refuse the handshake (HTTP 403) rather than fail it with a 500.
            logger.warning("channel layer unavailable, refusing a connection")
            await receive()
            await send({"type": "websocket.close"})

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"room.{self.room}"
        # Messages this member sent, added to the room's count as it leaves (tasks.py).
        self.sent = 0
        # The ids of the latest messages this member got, so that a message sent again is not
        # passed on twice.
        self.recent = collections.deque(maxlen=64)
        # scope["user"] is never None: AuthMiddlewareStack is in front of every route (serving.py).
        if settings.ROOMS_REQUIRE_LOGIN and not self.scope["user"].is_authenticated:  # type: ignore[union-attr]
            await self.accept()
            await self.close(code=LOGIN_REQUIRED)
            return
        try:
            await self.join(self.group)
        except (TimeoutError, *CHANNEL_LAYER_ERRORS):
            logger.warning("channel layer unavailable, refusing %s", self.group)
            await self.close()
            return
        await self.accept()

    async def disconnect(self, code):
        try:
            await self.leave(self.group)
        except CHANNEL_LAYER_ERRORS:
            # Nothing to do: membership expires on its own (the layer's group_expiry).
            logger.warning("channel layer unavailable, could not leave %s", self.group)
        if self.sent:
            try:
                await count_messages.aenqueue(self.room, self.sent)
            except DatabaseError:
                logger.warning("database unavailable, %s messages left uncounted", self.sent)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # The base class would raise on invalid JSON and drop the connection: answer instead.
        try:
            content = await self.decode_json(text_data)
        except (TypeError, ValueError, RecursionError):  # not text, not JSON, nested too deep
            await self.send_json({"error": 'Send JSON text: {"message": "<text>"}.'})
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or not isinstance(content.get("message"), str):
            await self.send_json({"error": 'Expected an object with a string "message".'})
            return
        if not is_encodable(content["message"]):
            await self.send_json({"error": "The message is not valid Unicode text."})
            return
        given = content.get("id")
        if given is not None and not (
            isinstance(given, str) and 0 < len(given) <= 64 and is_encodable(given)
        ):
            await self.send_json({"error": 'An "id" is a string of 1 to 64 characters.'})
            return
        user = self.scope["user"]
        message = {
            "message": content["message"],
            "user": user.get_username() if user.is_authenticated else None,  # type: ignore[union-attr]
        }
        if given is not None:
            message["id"] = given
        # Every member gets the same frame: encode it once here, not once per member.
        text = await self.encode_json(message)
        if len(text.encode()) > settings.WEBSOCKET_MAX_MESSAGE_BYTES:
            await self.send_json({"error": "The message is too long to send to the room."})
            return
        event = {"type": "room.message", "text": text, "id": given or uuid.uuid4().hex}
        try:
            async with asyncio.timeout(self.layer_timeout):
                await self.send_to_room(event)
        except (TimeoutError, *CHANNEL_LAYER_ERRORS):
            logger.warning("channel layer unavailable, message to %s not confirmed", self.group)
            error = "The room may not have received the message: send it again with this id."
            await self.send_json({"error": error, "id": event["id"]})
            return
        self.sent += 1

    async def send_to_room(self, event):
        try:
            await self.channel_layer.group_send(self.group, event)
        except CHANNEL_LAYER_ERRORS:
            # A pooled connection that the server closed (a restart) fails the first time it
            # is used, and the pool replaces it: try once more before telling the sender.
            await self.channel_layer.group_send(self.group, event)

    @classmethod
    async def encode_json(cls, content):
        # As UTF-8: JSON's default ASCII escapes make non-ASCII text up to three times larger.
        return json.dumps(content, ensure_ascii=False)

    async def dispatch(self, message):
        # Channels runs close_old_connections() in a thread before every handler, for those
        # that use the database. room_message() does not: skip that round trip, made once per
        # member for every message in the room.
        if message["type"] == "room.message":
            return await self.room_message(message)
        return await super().dispatch(message)

    async def room_message(self, event):
        """Handle "room.message" events from the group: pass the frame on to this client, once."""
        if event["id"] in self.recent:
            return
        self.recent.append(event["id"])
        await self.send(text_data=event["text"])


def is_encodable(text):
    """JSON can carry lone surrogates ("\\ud800"), which no channel layer can encode."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
