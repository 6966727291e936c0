import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from {{ cookiecutter.project_slug }}.asgi import application

# Consumers run in their own threads and tasks: only committed data is visible to them.
pytestmark = pytest.mark.django_db(transaction=True)

# Browsers send the page's origin: one of ALLOWED_HOSTS for the project's own pages.
SAME_SITE = [(b"origin", f"http://{settings.ALLOWED_HOSTS[0].lstrip('.')}".encode())]


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    # Tests run in one process and need no Redis.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def connect(path, headers=SAME_SITE):
    return WebsocketCommunicator(application, path, headers=headers)


async def test_everyone_in_the_room_receives_a_message():
    alice, bob = connect("/ws/rooms/lobby/"), connect("/ws/rooms/lobby/")
    assert (await alice.connect())[0]
    assert (await bob.connect())[0]

    await alice.send_json_to({"message": "hello"})

    assert await alice.receive_json_from() == {"message": "hello", "user": None}
    assert await bob.receive_json_from() == {"message": "hello", "user": None}
    await alice.disconnect()
    await bob.disconnect()


async def test_other_rooms_hear_nothing():
    alice, carol = connect("/ws/rooms/lobby/"), connect("/ws/rooms/kitchen/")
    assert (await alice.connect())[0]
    assert (await carol.connect())[0]

    await alice.send_json_to({"message": "hello"})

    assert await alice.receive_json_from() == {"message": "hello", "user": None}
    assert await carol.receive_nothing()
    await alice.disconnect()
    await carol.disconnect()


@pytest.mark.parametrize(
    "frame",
    [
        {"text_data": "not json"},
        {"text_data": "[1, 2]"},
        {"text_data": "{}"},
        {"text_data": '{"message": 42}'},
        {"text_data": '{"message": "\\ud800"}'},  # a lone surrogate: not Unicode text
        {"text_data": "[" * 100_000 + "]" * 100_000},  # too deep for the JSON parser
        {"bytes_data": b"\x00\x01"},
    ],
    ids=["not-json", "not-object", "no-message", "not-string", "surrogate", "deep", "binary"],
)
async def test_a_malformed_message_gets_an_error_and_the_connection_stays(frame):
    alice = connect("/ws/rooms/lobby/")
    assert (await alice.connect())[0]

    await alice.send_to(**frame)
    assert "error" in await alice.receive_json_from()

    await alice.send_json_to({"message": "still here"})
    assert await alice.receive_json_from() == {"message": "still here", "user": None}
    await alice.disconnect()


@pytest.mark.parametrize(
    "headers",
    [[(b"origin", b"http://evil.example")], []],
    ids=["foreign-origin", "no-origin"],
)
async def test_handshakes_from_other_sites_are_refused(headers):
    connected, _ = await connect("/ws/rooms/lobby/", headers).connect()

    assert not connected


@pytest.mark.parametrize("path", ["/ws/nowhere/", "/ws/rooms/no spaces/", "/ws/rooms/", "/"])
async def test_unknown_paths_are_refused(path):
    connected, _ = await connect(path).connect()

    assert not connected


async def test_messages_carry_the_logged_in_username(async_client, django_user_model):
    user = await django_user_model.objects.acreate(username="alice")
    await async_client.aforce_login(user)
    cookie = f"sessionid={async_client.cookies['sessionid'].value}".encode()
    alice = connect("/ws/rooms/lobby/", [*SAME_SITE, (b"cookie", cookie)])
    assert (await alice.connect())[0]

    await alice.send_json_to({"message": "hi"})

    assert await alice.receive_json_from() == {"message": "hi", "user": "alice"}
    await alice.disconnect()
