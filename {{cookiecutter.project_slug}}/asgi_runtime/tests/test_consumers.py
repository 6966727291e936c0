"""GroupMember: a consumer leaves its groups and drops its channel however it ends."""

import asyncio
from typing import cast

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator

from asgi_runtime.consumers import GroupMember

# Channels closes old database connections before each handler, in a thread of its own.
pytestmark = pytest.mark.django_db(transaction=True)

CHANNELS: list[str] = []


class Member(GroupMember, AsyncWebsocketConsumer):
    async def connect(self):
        CHANNELS.append(self.channel_name)
        await self.join("members")
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "crash":
            raise RuntimeError("a bug in the consumer")

    async def members_message(self, event):
        await self.send(text_data=event["text"])


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CHANNELS.clear()


async def connected_member():
    member = WebsocketCommunicator(Member.as_asgi(), "/")
    assert (await member.connect())[0]
    return member, CHANNELS[-1]


def held(layer, channel):
    in_groups = any(channel in members for members in layer.groups.values())
    return channel in layer.channels or in_groups


async def test_a_member_that_leaves_with_messages_queued_leaves_no_trace():
    layer = cast(InMemoryChannelLayer, get_channel_layer())  # The fixture's.
    member, channel = await connected_member()
    for n in range(20):
        await layer.group_send("members", {"type": "members.message", "text": str(n)})
    assert held(layer, channel)

    await member.disconnect()

    assert not held(layer, channel)


async def test_a_member_that_crashes_leaves_no_trace():
    layer = cast(InMemoryChannelLayer, get_channel_layer())  # The fixture's.
    member, channel = await connected_member()
    await layer.group_send("members", {"type": "members.message", "text": "queued"})

    await member.send_to(text_data="crash")
    with pytest.raises(RuntimeError):
        await member.wait()

    assert not held(layer, channel)


class FrozenLayer(InMemoryChannelLayer):
    """A layer whose server has stopped answering: every call waits forever."""

    async def group_send(self, group, message):
        await asyncio.Event().wait()

    async def group_add(self, group, channel):
        await asyncio.Event().wait()


async def test_a_layer_that_does_not_answer_refuses_the_handshake_in_time(settings, monkeypatch):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.FrozenLayer"}}
    monkeypatch.setattr(Member, "layer_timeout", 0.1)
    member = WebsocketCommunicator(Member.as_asgi(), "/")

    connected, _ = await member.connect(timeout=2)

    assert not connected and CHANNELS == []


async def test_a_join_that_does_not_complete_in_time_is_undone(monkeypatch):
    layer = cast(InMemoryChannelLayer, get_channel_layer())  # The fixture's.
    monkeypatch.setattr(Member, "layer_timeout", 0.1)
    member = WebsocketCommunicator(Member.as_asgi(), "/")

    async def frozen_group_add(group, channel):
        layer.groups.setdefault(group, {})[channel] = 0  # as the layer does, before it waits
        await asyncio.Event().wait()

    monkeypatch.setattr(layer, "group_add", frozen_group_add)
    with pytest.raises(TimeoutError):
        await member.connect(timeout=2)

    assert not held(layer, CHANNELS[-1])
