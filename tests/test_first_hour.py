"""
The first hour, per server, as a new user lives it: bake with the defaults, run the README's
quick start as written (on Python 3.13, with uv), sign up (the email arrives, sent by the
worker runserver runs), chat over a WebSocket, edit a view while chatting (the server
restarts, the socket is closed with "service restart" and reconnects), run the project's
tests, stop.
"""

import json
import re
import secrets
import shlex
import time
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
import websockets
from test_install import newer_python  # noqa: F401 - a fixture, used by name
from test_serving import closed_for_a_restart
from websockets.sync.client import connect as ws_connect

from harness import BIN, Server, fetch, free_port, receive_json, run, wait_for
from matrix import OPTIONS
from projects import bake

pytestmark = pytest.mark.slow


def quick_start(readme):
    """The commands of README.md's "Quick start", as written there."""
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def console_email(log):
    """The first email printed on the console (the development default), once it is whole."""
    found = re.search(r"^Subject: .*?^-{79}$", log, re.S | re.M)
    return found and found.group()


def link_in(email):
    """The verification link, as a newcomer copies it from the console: what the line has."""
    found = re.search(r"http://127\.0\.0\.1:\d+(/accounts/confirm-email/\S*)", email)
    assert found, f"no verification link in the email:\n{email}"
    return found.group(1)


def cookies_of(headers):
    jar = SimpleCookie()
    for header in headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def sign_up(port, username, password):
    """The sign-up form, as a browser fills it in: the session cookie it signs in with."""
    status, headers, _ = fetch(port, "GET", "/accounts/signup/")
    assert status == 200
    csrf = cookies_of(headers)["csrftoken"]
    form = {"email": f"{username}@example.com", "username": username}
    form.update(password1=password, password2=password)
    status, headers, body = fetch(
        port,
        "POST",
        "/accounts/signup/",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf}",
            "Origin": f"http://127.0.0.1:{port}",
            "Referer": f"http://127.0.0.1:{port}/accounts/signup/",
        },
        body=urlencode({**form, "csrfmiddlewaretoken": csrf}),
    )
    assert status == 302, body[:2000]
    return cookies_of(headers)["sessionid"]


def chat(port, session):
    return ws_connect(
        f"ws://127.0.0.1:{port}/ws/rooms/lobby/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={session}"},
        open_timeout=10,
        close_timeout=3,
    )


@pytest.mark.parametrize("server", OPTIONS["server"])
def test_the_first_hour(cookies, server, newer_python, tmp_path):  # noqa: F811
    project = bake(cookies, {"server": server}, project_name="First Hour")
    # The defaults: WebSockets, the in-memory layer and SQLite, so nothing else to start.
    first, second = quick_start((project.path / "README.md").read_text())
    assert (first, second) == (
        "uv run python manage.py migrate",
        "uv run python manage.py runserver",
    )
    # uv on PATH, this machine's Python 3.13 (uv must not download one); nothing else.
    env = project.development_env(UV_PYTHON=newer_python, UV_PYTHON_DOWNLOADS="never")
    migrate = run(project.path, shlex.split(first), env, timeout=600)
    assert migrate.returncode == 0, migrate.stdout

    # The port, as the README says to give another one: runserver's argument.
    port = free_port()
    username, password = "newcomer", secrets.token_urlsafe(12)
    views = project.path / "rooms" / "views.py"
    original = views.read_text()
    command, log = f"{second} {port}", tmp_path / "dev.log"
    with Server(project.path, command, {**env, "PORT": str(port)}, log, timeout=120) as dev:
        session = sign_up(dev.port, username, password)
        # Its email, sent by the worker that runserver runs (no second command), on the console,
        # with the link whole, on one line (not cut by quoted-printable's "=" line ends).
        wait_for(lambda: console_email(dev.log), 30, "the sign-up's email")
        status, _, page = fetch(dev.port, "GET", link_in(console_email(dev.log)))
        assert status == 200 and f"{username}@example.com".encode() in page, page[:2000]
        # Writing the database (the sign-up) restarted nothing: the session still works.
        status, _, page = fetch(dev.port, "GET", "/rooms/", {"Cookie": f"sessionid={session}"})
        assert status == 200 and username.encode() in page
        with chat(dev.port, session) as alice:
            alice.send(json.dumps({"message": "hello"}))
            assert receive_json(alice) == {"message": "hello", "user": username}
            views.write_text(
                "from django.http import HttpResponse\n"
                + re.sub(
                    r'return render\(request, "rooms/index\.html".*\)',
                    'return HttpResponse("edited in the first hour")',
                    original,
                )
            )
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    alice.recv(timeout=30)
        assert closed_for_a_restart(server, closed.value), dev.log
        # As the demo page does: reconnect until the restarted server answers.
        deadline = time.monotonic() + 60
        while True:
            try:
                with chat(dev.port, session) as alice:
                    alice.send(json.dumps({"message": "back"}))
                    assert receive_json(alice) == {"message": "back", "user": username}
                break
            # Refused while nothing listens; closed with 1012 by the server still stopping.
            except (OSError, websockets.exceptions.WebSocketException):
                assert time.monotonic() < deadline, f"no server after 60 s:\n{dev.log}"
                time.sleep(0.5)
        assert fetch(dev.port, "GET", "/rooms/")[2] == b"edited in the first hour"
        views.write_text(original)
    assert "Traceback" not in dev.log

    tests = run(project.path, [BIN / "uv", "run", "pytest", "-q", "-p", "no:cacheprovider"], env)
    assert tests.returncode == 0, tests.stdout
