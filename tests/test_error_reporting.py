"""
Errors someone hears about: with SENTRY_DSN, what fails in a view or in a WebSocket consumer
reaches Sentry as one event, from the production server of every server choice, through the
project's own request path (asgi_runtime/handler.py). Sentry here is a stand-in on loopback
(harness.SentryStandIn) that decodes what the SDK sends: each event names its request's URL,
and carries neither the session cookie nor the password of the form that was sent.
"""

import secrets

import pytest
from websockets.exceptions import ConnectionClosed

from harness import SentryStandIn, fetch, websocket
from matrix import once_per_server_with_websockets
from projects import start_production_server

pytestmark = [pytest.mark.slow, once_per_server_with_websockets]

PASSWORD = secrets.token_urlsafe(16)
SESSION = secrets.token_hex(16)


def marked(marker):
    """Accepts the event of the exception whose message names `marker`."""

    def condition(event):
        values = event.get("exception", {}).get("values", [])
        return any(marker in (value.get("value") or "") for value in values)

    return condition


def fail_in_a_view(server, marker):
    status, _, _ = fetch(
        server.port,
        "POST",
        f"/probe/fail?marker={marker}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"sessionid={SESSION}",
        },
        # The names of Django's and allauth's forms.
        body=f"username=alice&password={PASSWORD}&password1={PASSWORD}".encode(),
    )
    assert status == 500


def fail_in_a_consumer(server, marker):
    with websocket(server, "/ws/probe/fail/", headers={"Cookie": f"sessionid={SESSION}"}) as client:
        client.send(marker)
        with pytest.raises(ConnectionClosed):  # The server drops the connection.
            client.recv(timeout=10)


def test_errors_reach_sentry_once_each_with_the_url_and_no_secrets(deployed_project, tmp_path):
    with (
        SentryStandIn() as sentry,
        start_production_server(
            deployed_project,
            tmp_path / "server.log",
            SENTRY_DSN=sentry.dsn,
            SENTRY_ENVIRONMENT="tests",
            SENTRY_RELEASE="1.2.3",
        ) as server,
    ):
        site = f"127.0.0.1:{server.port}"
        fail_in_a_view(server, "in-a-view")
        view = sentry.wait_for_event(marked("in-a-view"))
        fail_in_a_consumer(server, "in-a-consumer")
        consumer = sentry.wait_for_event(marked("in-a-consumer"))
        # Each process sends its events in order: once this one is in, any second event of the
        # two errors above would be too.
        fail_in_a_view(server, "last")
        sentry.wait_for_event(marked("last"))
        # Errors in background tasks: add them here, once the project runs tasks.

    assert [marked("in-a-view")(event) for event in sentry.events] == [True, False, False]
    assert [marked("in-a-consumer")(event) for event in sentry.events] == [False, True, False]
    assert view["request"]["url"] == f"http://{site}/probe/fail"
    assert view["request"]["method"] == "POST"
    assert consumer["request"]["url"] == f"ws://{site}/ws/probe/fail/"
    for event in (view, consumer):
        assert (event["environment"], event["release"]) == ("tests", "1.2.3")
    for envelope in sentry.envelopes:
        assert SESSION.encode() not in envelope
        assert PASSWORD.encode() not in envelope
