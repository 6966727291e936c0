"""The demo's chat rooms, through the project's full `application`, as a browser uses them."""

import json
import os
import subprocess
import sys

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from {{ cookiecutter.project_slug }}.asgi import application

from .models import Room

# Consumers run in their own threads and tasks: only committed data is visible to them.
pytestmark = pytest.mark.django_db(transaction=True)

# A page of the site itself: its origin is the scheme, host and port the socket goes to.
HOST = settings.ALLOWED_HOSTS[0].lstrip(".")
SAME_SITE = [(b"host", HOST.encode()), (b"origin", f"http://{HOST}".encode())]


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    # Tests run in one process and need no Redis.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # Anyone may join, unless a test says otherwise (production's default is signed-in only).
    settings.ROOMS_REQUIRE_LOGIN = False


def connect(path="/ws/rooms/lobby/", headers=SAME_SITE):
    return WebsocketCommunicator(application, path, headers=headers)


async def test_everyone_in_the_room_receives_a_message():
    alice, bob = connect(), connect()
    assert (await alice.connect())[0]
    assert (await bob.connect())[0]

    await alice.send_json_to({"message": "hello"})

    assert await alice.receive_json_from() == {"message": "hello", "user": None}
    assert await bob.receive_json_from() == {"message": "hello", "user": None}
    await alice.disconnect()
    await bob.disconnect()


async def test_text_is_sent_as_utf8_and_a_broadcast_never_exceeds_the_message_limit():
    alice, bob = connect(), connect()
    assert (await alice.connect())[0]
    assert (await bob.connect())[0]
    limit = settings.WEBSOCKET_MAX_MESSAGE_BYTES

    # Within the limit as UTF-8, twice over it as JSON's ASCII escapes ("\u00e9").
    text = "é" * (limit // 3)
    await alice.send_to(text_data=json.dumps({"message": text}, ensure_ascii=False))
    frame = await bob.receive_from()
    assert json.loads(frame)["message"] == text and len(frame.encode()) < limit
    assert (await alice.receive_json_from())["message"] == text

    # Within the limit as sent, over it once wrapped for the room: refused to the sender only.
    await alice.send_json_to({"message": "x" * (limit - 20)})
    assert await alice.receive_json_from() == {
        "error": "The message is too long to send to the room."
    }
    assert await bob.receive_nothing()
    await alice.send_json_to({"message": "still here"})
    assert (await bob.receive_json_from())["message"] == "still here"
    await alice.disconnect()
    await bob.disconnect()


async def test_other_rooms_hear_nothing():
    alice, carol = connect(), connect("/ws/rooms/kitchen/")
    assert (await alice.connect())[0]
    assert (await carol.connect())[0]

    await alice.send_json_to({"message": "hello"})

    assert await alice.receive_json_from() == {"message": "hello", "user": None}
    assert await carol.receive_nothing()
    await alice.disconnect()
    await carol.disconnect()


async def test_a_message_sent_again_with_its_id_reaches_each_member_once():
    alice, bob = connect(), connect()
    assert (await alice.connect())[0]
    assert (await bob.connect())[0]

    for _ in range(2):  # As after an error frame whose id says it may not have gone out.
        await alice.send_json_to({"message": "hello", "id": "a1"})
    await alice.send_json_to({"message": "hello", "id": "a2"})

    for member in (alice, bob):
        assert await member.receive_json_from() == {"message": "hello", "user": None, "id": "a1"}
        assert await member.receive_json_from() == {"message": "hello", "user": None, "id": "a2"}
        assert await member.receive_nothing()
    await alice.disconnect()
    await bob.disconnect()


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
        {"text_data": '{"message": "hi", "id": 7}'},
        {"text_data": json.dumps({"message": "hi", "id": "x" * 65})},
    ],
    ids=[
        *("not-json", "not-object", "no-message", "not-string", "surrogate", "deep", "binary"),
        *("id-not-string", "id-too-long"),
    ],
)
async def test_a_malformed_message_gets_an_error_and_the_connection_stays(frame):
    alice = connect()
    assert (await alice.connect())[0]

    await alice.send_to(**frame)
    assert "error" in await alice.receive_json_from()

    await alice.send_json_to({"message": "still here"})
    assert await alice.receive_json_from() == {"message": "still here", "user": None}
    await alice.disconnect()


async def test_messages_carry_the_username_of_a_signed_in_user(async_client, django_user_model):
    user = await django_user_model.objects.acreate(username="alice")
    await async_client.aforce_login(user)
    cookie = f"sessionid={async_client.cookies['sessionid'].value}".encode()
    alice = connect(headers=[*SAME_SITE, (b"cookie", cookie)])
    assert (await alice.connect())[0]

    await alice.send_json_to({"message": "hi"})

    assert await alice.receive_json_from() == {"message": "hi", "user": "alice"}
    await alice.disconnect()


def test_the_page_says_who_you_are(client, django_user_model):
    assert b"You chat as <strong>anonymous</strong>" in client.get("/rooms/").content

    client.force_login(django_user_model.objects.create(username="bob"))

    assert b"You chat as <strong>bob</strong>" in client.get("/rooms/").content


async def signed_in_headers(async_client, django_user_model, username):
    user = await django_user_model.objects.acreate(username=username)
    await async_client.aforce_login(user)
    return [
        *SAME_SITE,
        (b"cookie", f"sessionid={async_client.cookies['sessionid'].value}".encode()),
    ]


async def test_signed_in_only_an_anonymous_connection_is_closed_with_4401(
    settings, async_client, django_user_model
):
    settings.ROOMS_REQUIRE_LOGIN = True
    anonymous = connect()

    assert (await anonymous.connect())[0]
    assert await anonymous.receive_output() == {"type": "websocket.close", "code": 4401}

    alice = connect(headers=await signed_in_headers(async_client, django_user_model, "alice"))
    assert (await alice.connect())[0]
    await alice.send_json_to({"message": "members only"})
    assert await alice.receive_json_from() == {"message": "members only", "user": "alice"}
    await alice.disconnect()


def test_signed_in_only_the_page_offers_to_log_in(client, settings, django_user_model):
    settings.ROOMS_REQUIRE_LOGIN = True

    page = client.get("/rooms/").content.decode()

    assert 'id="log-in" href="/accounts/login/?next=/rooms/"' in page
    assert "You chat as" not in page


@pytest.mark.parametrize(("debug", "required"), [("false", "True"), ("true", "False")])
def test_production_lets_only_signed_in_users_in_by_default(debug, required):
    variables = {"DJANGO_READ_DOT_ENV": "false", "DJANGO_DEBUG": debug}
    variables |= {"DJANGO_SECRET_KEY": "s" * 50, "DJANGO_ALLOWED_HOSTS": "example.com"}
    environment = {k: v for k, v in os.environ.items() if k != "ROOMS_REQUIRE_LOGIN"}
    code = "import django; django.setup(); from django.conf import settings as s; "
    code += "print(s.ROOMS_REQUIRE_LOGIN)"

    shown = subprocess.run(
        [sys.executable, "-c", code],
        env={**environment, **variables},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )

    assert shown.stdout.strip() == required, shown.stderr


async def test_a_member_who_leaves_adds_its_messages_to_the_rooms_count():
    """Through a task, enqueued by the consumer (run at once in tests: conftest.py)."""
    alice = connect("/ws/rooms/busy/")
    assert (await alice.connect())[0]
    for text in ("one", "two"):
        await alice.send_json_to({"message": text})
        await alice.receive_json_from()
    assert not await Room.objects.filter(name="busy").aexists()

    await alice.disconnect()

    assert (await Room.objects.aget(name="busy")).messages == 2
