"""asgi.py's `application`, called as a server calls it."""

import asyncio

import pytest
{%- if cookiecutter.websockets %}
from channels.testing import WebsocketCommunicator
from django.conf import settings
{%- endif %}

from {{ cookiecutter.project_slug }}.asgi import application


async def call(scope, *messages):
    """Call the application with `messages` to receive; return what it sent."""
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    for message in messages:
        inbox.put_nowait(message)
    sent = []

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(application(scope, inbox.get, send), timeout=10)
    return sent


@pytest.mark.django_db
async def test_start_up_and_shutdown_are_acknowledged():
    sent = await call(
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        {"type": "lifespan.startup"},
        {"type": "lifespan.shutdown"},
    )

    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
{%- if cookiecutter.websockets %}


# A page of the site itself: its origin is the scheme, host and port the socket goes to.
HOST = settings.ALLOWED_HOSTS[0].lstrip(".")
SAME_SITE = [(b"host", HOST.encode()), (b"origin", f"http://{HOST}".encode())]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"host", HOST.encode()), (b"origin", b"http://evil.example")],
        [(b"host", HOST.encode()), (b"origin", f"http://{HOST}:1".encode())],
        [(b"host", HOST.encode())],
    ],
    ids=["foreign-origin", "other-port", "no-origin"],
)
async def test_handshakes_from_other_sites_are_refused(headers):
    connected, _ = await WebsocketCommunicator(application, "/ws/rooms/lobby/", headers).connect()

    assert not connected


@pytest.mark.parametrize("path", ["/ws/nowhere/", "/ws/rooms/no spaces/", "/ws/rooms/", "/"])
async def test_handshakes_on_paths_without_a_route_are_refused(path):
    connected, _ = await WebsocketCommunicator(application, path, SAME_SITE).connect()

    assert not connected
{%- else %}


async def test_websocket_handshakes_are_refused():
    sent = await call(
        {"type": "websocket", "path": "/ws/", "headers": [], "client": ("127.0.0.1", 50000)},
        {"type": "websocket.connect"},
    )

    assert sent == [{"type": "websocket.close"}]
{%- endif %}
