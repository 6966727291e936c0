"""
Every combination's production command (Procfile), running in production mode: what a user,
a browser, a proxy and a process manager see. The last test stops the server.
"""

import http.client
import json
import os
import re
import socket
import sys
import threading
import time

import pytest
import websockets
from conftest import ADMIN, only_when
from harness import (
    HTTPS,
    Server,
    free_port,
    get_json,
    procfile_command,
    receive_json,
    request,
    wait_for,
    websocket,
)


def refused_status(server, path, **kwargs):
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websocket(server, path, **kwargs).close()
    return refused.value.response.status_code


with_websockets = only_when(lambda answers: answers["websockets"])
without_websockets = only_when(lambda answers: not answers["websockets"])


def status_or_none(port, path):
    """The status of GET path, or None while nothing listens (a server restarting)."""
    try:
        return request(port, "GET", path)[0]
    except (OSError, http.client.HTTPException):
        return None


def cookies(headers):
    return "\n".join(headers.get_all("Set-Cookie") or [])


def admin_session(port):
    """Log in through the admin's form, as a browser does: returns the session cookie."""
    status, headers, body = request(port, "GET", "/admin/login/", headers=HTTPS)
    assert status == 200
    csrf_cookie = re.search(r"csrftoken=([^;]+)", cookies(headers)).group(1)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username={ADMIN['username']}&password={ADMIN['password']}"
    status, headers, _ = request(
        port,
        "POST",
        "/admin/login/?next=/admin/",
        headers={
            **HTTPS,
            "Origin": f"https://127.0.0.1:{port}",
            "Cookie": f"csrftoken={csrf_cookie}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=form,
    )
    assert status == 302, "login refused"
    return re.search(r"sessionid=([^;]+)", cookies(headers)).group(1)


def test_healthz_answers_any_host_over_plain_http(server):
    assert get_json(server.port, "/healthz", headers={"Host": "10.0.0.7"}) == (
        200,
        {"status": "ok"},
    )


def test_plain_http_is_redirected_to_https(server):
    status, headers, _ = request(server.port, "GET", "/admin/", headers={"Host": "127.0.0.1"})

    assert status == 301
    assert headers["Location"] == "https://127.0.0.1/admin/"


def test_readyz_reports_every_backing_service_ok(server, project):
    checks = {"database": "ok"}
    if project.redis_url:
        checks["redis"] = "ok"

    assert get_json(server.port, "/readyz") == (200, {"status": "ok", "checks": checks})


def unreachable_database(project, tmp_path):
    if project.answers["database"] == "postgresql":
        return f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    return f"sqlite:///{tmp_path}/no/such/directory/db.sqlite3"


def test_readyz_names_an_unreachable_database(project, probe, tmp_path):
    env = project.production_env(
        PORT=free_port(), DATABASE_URL=unreachable_database(project, tmp_path), **probe
    )
    running = Server(project.path, procfile_command(project.path), env, tmp_path / "log")
    try:
        began = time.monotonic()
        status, body = get_json(running.port, "/readyz")
        assert time.monotonic() - began < 5  # the check gives up after 3 s
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "down"
        assert get_json(running.port, "/healthz") == (200, {"status": "ok"})
    finally:
        running.stop()


def test_the_admin_stylesheet_is_served_compressed(server, prepared):
    manifest = json.loads((prepared.path / "staticfiles" / "staticfiles.json").read_text())
    url = "/static/" + manifest["paths"]["admin/css/base.css"]

    status, headers, _ = request(
        server.port, "GET", url, headers={**HTTPS, "Accept-Encoding": "gzip"}
    )

    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert headers["Content-Encoding"] == "gzip"
    assert "immutable" in headers["Cache-Control"]


def test_an_admin_login_reads_and_writes_through_the_orm(server):
    session = admin_session(server.port)

    status, _, body = request(
        server.port, "GET", "/admin/", headers={**HTTPS, "Cookie": f"sessionid={session}"}
    )

    assert status == 200
    assert b"Site administration" in body


def test_proxy_headers_are_believed_from_trusted_proxies_only(server):
    forwarded = {**HTTPS, "X-Forwarded-For": "203.0.113.9"}

    trusted = get_json(server.port, "/probe/client", headers=forwarded)
    # The same headers from another address (127.0.0.2 is not in FORWARDED_ALLOW_IPS).
    spoofed = get_json(server.port, "/probe/client", headers=forwarded, source="127.0.0.2")

    assert trusted == (200, {"address": "203.0.113.9", "scheme": "https"})
    assert spoofed == (200, {"address": "127.0.0.2", "scheme": "http"})


@with_websockets
def test_everyone_in_a_room_receives_a_message(server, project):
    with websocket(server) as alice, websocket(server) as bob:
        alice.send(json.dumps({"message": "hello"}))

        assert receive_json(alice) == {"message": "hello", "user": None}
        assert receive_json(bob) == {"message": "hello", "user": None}


@with_websockets
def test_a_logged_in_users_messages_carry_their_username(server, project):
    session = admin_session(server.port)

    with websocket(server, headers={"Cookie": f"sessionid={session}"}) as admin:
        admin.send(json.dumps({"message": "hi"}))

        assert receive_json(admin) == {"message": "hi", "user": ADMIN["username"]}


MALFORMED = {
    "not-json": "not json",
    "not-object": "[1, 2]",
    "no-message": "{}",
    "not-string": '{"message": 42}',
    "surrogate": '{"message": "\\ud800"}',
    "deep": "[" * 100_000 + "]" * 100_000,
    "binary": b"\x00",
}


@with_websockets
@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_message_gets_an_error_frame_and_the_connection_stays(server, project, frame):
    with websocket(server) as alice:
        alice.send(frame)
        assert "error" in receive_json(alice)

        alice.send(json.dumps({"message": "still here"}))
        assert receive_json(alice) == {"message": "still here", "user": None}


@with_websockets
@pytest.mark.parametrize("origin", ["http://evil.example", None], ids=["foreign", "none"])
def test_handshakes_from_other_sites_are_refused(server, project, origin):
    assert refused_status(server, "/ws/rooms/lobby/", origin=origin) == 403


@with_websockets
@pytest.mark.parametrize("path", ["/ws/nowhere/", "/ws/rooms/a%20b/", "/ws/rooms/", "/"])
def test_handshakes_on_unknown_paths_are_refused(server, project, path):
    assert refused_status(server, path) == 403


@with_websockets
def test_an_oversized_message_is_refused_and_the_server_stays_up(server, project):
    with websocket(server) as alice:
        alice.send("x" * (1024 * 1024 + 1))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            alice.recv(timeout=10)
    # daphne drops the connection without a close frame (clients see 1006); see README.md.
    expected = 1006 if project.answers["server"] == "daphne" else 1009
    assert closed.value.rcvd is None if expected == 1006 else closed.value.rcvd.code == expected

    with websocket(server) as bob:
        bob.send(json.dumps({"message": "after"}))
        assert receive_json(bob)["message"] == "after"


@with_websockets
def test_clients_that_vanish_without_a_close_frame_leave_their_room(server, project):
    room = "/ws/rooms/vanish/"
    with (
        websocket(server, room) as alive,
        websocket(server, room) as b,
        websocket(server, room) as c,
    ):
        assert get_json(server.port, "/probe/groups")[1].get("room.vanish") == 3
        for client in (b, c):
            # Gone without a close frame, as when a laptop lid shuts or a tab is killed.
            client.socket.shutdown(socket.SHUT_RDWR)
            client.socket.close()
        wait_for(
            lambda: get_json(server.port, "/probe/groups")[1].get("room.vanish") == 1,
            10,
            "dead clients leaving the room",
        )

        alive.send(json.dumps({"message": "anyone?"}))
        assert receive_json(alive) == {"message": "anyone?", "user": None}


@without_websockets
def test_without_websockets_a_handshake_is_refused(server, project):
    assert refused_status(server, "/ws/rooms/lobby/") == 403


# Last: stops the server.

# Whether a request in flight when SIGTERM arrives completes (README.md documents daphne's).
FINISHES_REQUESTS_IN_FLIGHT = {"uvicorn": True, "hypercorn": True, "daphne": False}


def clean_exit_codes(server):
    # uvicorn re-raises the signal it caught: -15 is its clean exit. daphne on Python 3.11 can
    # crash in the garbage collector while exiting with a request in flight (README.md).
    if server == "daphne" and sys.version_info < (3, 12):
        return {0, -11}
    return {0, -15} if server == "uvicorn" else {0}


def test_sigterm_finishes_the_request_in_flight_and_leaves_a_clean_log(
    server, project, slow_request_started
):
    outcome = {}

    def slow_request():
        try:
            outcome["status"] = request(server.port, "GET", "/probe/slow?seconds=2")[0]
        except OSError as error:
            outcome["error"] = error

    in_flight = threading.Thread(target=slow_request)
    in_flight.start()
    wait_for(slow_request_started.exists, 10, "the slow request reaching the view")
    stopped = server.stop(timeout=10)
    in_flight.join(15)

    assert stopped is not None, "still running 10 s after SIGTERM"
    code, _ = stopped
    assert code in clean_exit_codes(project.answers["server"])
    finished = outcome.get("status") == 200
    assert finished == FINISHES_REQUESTS_IN_FLIGHT[project.answers["server"]], outcome
    assert server.log_problems() == []


def test_the_development_command_boots_and_reloads(project, tmp_path):
    env = project.development_env(PORT=free_port())
    urls = project.path / project.slug / "urls.py"
    original = urls.read_text()
    dev = Server(
        project.path, procfile_command(project.path, "Procfile.dev"), env, tmp_path / "dev.log"
    )
    try:
        if project.answers["websockets"]:
            with websocket(dev) as alice:
                alice.send(json.dumps({"message": "dev"}))
                assert receive_json(alice)["message"] == "dev"
        # Edit a route: the server must pick it up without a restart. Reloaders poll file
        # times, and one may take its first look after the edit: touch the file until seen.
        urls.write_text(original.replace('path("admin/"', 'path("edited/"'))
        deadline = time.monotonic() + 20
        while status_or_none(dev.port, "/edited/login/") != 200:
            assert time.monotonic() < deadline, f"no reload after 20 s:\n{dev.log}"
            time.sleep(1)
            os.utime(urls)
    finally:
        dev.stop()
        urls.write_text(original)
    assert "Traceback" not in dev.log


# daphne's runserver is an ASGI server; without WebSockets there is nothing to warn about.
@only_when(lambda answers: answers["websockets"] and answers["server"] != "daphne")
def test_wsgi_runserver_says_websockets_need_the_asgi_server(project, tmp_path):
    env = project.development_env(PORT=free_port())
    command = "python manage.py runserver --noreload 127.0.0.1:$PORT"
    runserver = Server(project.path, command, env, tmp_path / "runserver.log")
    runserver.stop()
    assert "WebSockets (/ws/...) will not work here" in runserver.log
    assert procfile_command(project.path, "Procfile.dev") in runserver.log
