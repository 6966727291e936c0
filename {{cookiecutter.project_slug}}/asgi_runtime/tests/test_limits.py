"""limits.py: what one WebSocket connection may send, and leave unread, whatever the consumer."""

import asyncio
import signal
import socket

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator

from asgi_runtime import lifespan
from asgi_runtime.limits import SERVICE_RESTART, PeerTimeouts, WebSocketLimits

# Consumers close stale database connections between messages.
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    # Tests run in one process and need no Redis.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


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


async def test_after_a_cut_off_the_clients_messages_are_read_until_it_leaves(settings):
    # A server that stops reading a connection whose messages pile up unread (hypercorn)
    # would otherwise never see the client answer the close.
    settings.WEBSOCKET_MAX_MESSAGE_BYTES = 100
    client = await connected()
    await client.send_to(bytes_data=b"x" * 101)
    assert await client.receive_output() == {"type": "websocket.close", "code": 4009}

    for _ in range(20):
        await client.send_to(text_data="still sending")
    await asyncio.sleep(0.05)
    assert not client.future.done()  # still reading

    await client.send_input({"type": "websocket.disconnect", "code": 4009})
    await client.wait(timeout=1)
    assert client.input_queue.empty()


@pytest.fixture
def server_handler():
    """The server's own SIGTERM handler, which lifespan.stopping() runs after its own: it
    records the signal here. This process gets its handlers back afterwards."""
    saved = {number: signal.getsignal(number) for number in lifespan.STOP_SIGNALS}
    received = []
    signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    lifespan._stopping = None
    yield received
    for number, handler in saved.items():
        signal.signal(number, handler)
    lifespan._stopping = None


class Member(Echo):
    disconnected = None

    async def disconnect(self, code):
        Member.disconnected = code


async def test_a_stop_signal_closes_every_connection_with_1012_first(server_handler):
    client = WebsocketCommunicator(WebSocketLimits(Member.as_asgi()), "/")
    assert (await client.connect())[0]
    await client.send_to(text_data="before")
    assert await client.receive_from() == "before"

    signal.raise_signal(signal.SIGTERM)  # What a deploy or runserver's reload sends.

    assert await client.receive_output() == {"type": "websocket.close", "code": SERVICE_RESTART}
    assert server_handler == []  # The server's handler waits while a connection is open.
    await client.send_input({"type": "websocket.disconnect", "code": SERVICE_RESTART})
    await client.wait()
    assert Member.disconnected == SERVICE_RESTART  # The consumer ended as for a client leaving.
    async with asyncio.timeout(lifespan.CLOSE_SECONDS):
        while not server_handler:
            await asyncio.sleep(0.05)
    assert server_handler == [signal.SIGTERM]


async def test_a_connection_arriving_while_stopping_is_accepted_then_closed(server_handler):
    lifespan.stopping()  # As at the server's start-up.
    signal.raise_signal(signal.SIGTERM)
    await asyncio.sleep(0)
    client = WebsocketCommunicator(WebSocketLimits(Member.as_asgi()), "/")

    # The consumer sees its connect first, as always, then the close.
    assert (await client.connect())[0]
    assert await client.receive_output() == {"type": "websocket.close", "code": SERVICE_RESTART}


async def test_messages_within_the_limits_go_through(settings):
    settings.WEBSOCKET_MAX_MESSAGE_BYTES = 1000
    client = await connected()

    await client.send_to(text_data="y" * 1000)

    assert await client.receive_from() == "y" * 1000
    await client.disconnect()


async def test_a_send_the_client_never_takes_is_given_up(settings, caplog):
    settings.WEBSOCKET_SEND_TIMEOUT = 0.05
    finished = asyncio.Event()

    async def consumer(scope, receive, send):
        await send({"type": "websocket.accept"})  # waits in vain, then gives up
        await send({"type": "websocket.send", "text": "dropped at once"})
        finished.set()

    async def never_taken(message):
        await asyncio.Event().wait()

    scope = {"type": "websocket", "client": ["127.0.0.1", 50000], "server": None}
    await asyncio.wait_for(WebSocketLimits(consumer)(scope, None, never_taken), 1)

    assert finished.is_set()
    assert "stopped reading: dropped" in caplog.text


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
def test_the_servers_sockets_get_the_timeout_and_keepalive():
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listening.accept()
            with accepted:
                PeerTimeouts().apply({"server": ["127.0.0.1", port]}, 2.5)

                def timeouts_of(sock):
                    return (
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    )

                assert timeouts_of(listening) == timeouts_of(accepted) == (2500, 1, 2)
                assert timeouts_of(client)[:2] == (0, 0)  # other sockets: left alone
