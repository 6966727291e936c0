"""limits.py: what one WebSocket connection may send, whatever the consumer."""

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator

from {{ cookiecutter.project_slug }}.limits import WebSocketLimits

# Consumers close stale database connections between messages.
pytestmark = pytest.mark.django_db


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


async def connected():
    client = WebsocketCommunicator(WebSocketLimits(Echo.as_asgi()), "/")
    assert (await client.connect())[0]
    return client


async def test_a_message_over_the_size_limit_closes_the_connection_with_4009(settings):
    settings.WEBSOCKET_MAX_MESSAGE_BYTES = 100
    client = await connected()

    await client.send_to(bytes_data=b"x" * 101)

    assert await client.receive_output() == {"type": "websocket.close", "code": 4009}


async def test_text_counts_in_utf8_bytes(settings):
    settings.WEBSOCKET_MAX_MESSAGE_BYTES = 100
    client = await connected()

    await client.send_to(text_data="é" * 51)  # 51 characters, 102 bytes

    assert await client.receive_output() == {"type": "websocket.close", "code": 4009}


async def test_a_flood_closes_the_connection_with_4008(settings):
    settings.WEBSOCKET_MESSAGE_RATE = 1
    settings.WEBSOCKET_MESSAGE_BURST = 3
    client = await connected()

    for text in ("one", "two", "three"):
        await client.send_to(text_data=text)
        assert await client.receive_from() == text
    await client.send_to(text_data="four")

    assert await client.receive_output() == {"type": "websocket.close", "code": 4008}


async def test_messages_within_the_limits_go_through(settings):
    settings.WEBSOCKET_MAX_MESSAGE_BYTES = 1000
    client = await connected()

    await client.send_to(text_data="y" * 1000)

    assert await client.receive_from() == "y" * 1000
    await client.disconnect()
