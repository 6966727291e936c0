"""
middleware.py and handler.py answer as Django's own stack does, with far fewer thread hops.

The first tests run each scenario on two handlers built here from the project's settings:
"stock", Django's ASGIHandler with Django's default middleware (the project's other middleware
in place), and "fast", handler.py's PooledASGIHandler with MIDDLEWARE. A scenario asserts what
a browser must see; then both stacks' transcripts (status, every header in order, body; with
dates and random values masked) must be identical. The others check what handler.py promises,
and count the hops.
"""

import asyncio
import json
import re
import threading

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished, request_started

from {{ cookiecutter.project_slug }} import middleware
from {{ cookiecutter.project_slug }}.handler import PooledASGIHandler

from .fast_path import urls
from .fast_path.client import Client, call, count_hops, http_scope, multipart

# Django's default MIDDLEWARE, whose classes the project's middleware.py subclasses.
DJANGO_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
PASSWORD = "correct horse battery staple"
REJECTED = b"CSRF verification failed"
# Requests run in threads of their own, on database connections of their own, which see only
# committed data: tests that use the database commit, and empty it afterwards.
uses_database = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_path_settings(settings):
    settings.ROOT_URLCONF = urls.__name__
    # HSTS is off in development: on, to compare.
    settings.SECURE_HSTS_SECONDS = 3600
    # Logging in twice per stack: a fast hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice():
    return get_user_model().objects.create_superuser("alice", "alice@example.com", PASSWORD)


def test_settings_name_djangos_middleware_and_the_handler_loads_the_fast_ones():
    assert [path for path in django_settings.MIDDLEWARE if path in DJANGO_MIDDLEWARE] == (
        DJANGO_MIDDLEWARE
    )
    assert set(middleware.LOOP_DISPATCH) == set(DJANGO_MIDDLEWARE)
    handler = PooledASGIHandler()
    # The CSRF middleware's process_view is the one hook Django keeps a list of.
    assert [type(hook.__self__) for hook in handler._view_middleware] == [
        middleware.CsrfViewMiddleware
    ]
    handler.pool.shutdown()


@pytest.fixture
def build():
    """build() makes both stacks, from the settings in force when it is called."""
    fast_handlers = []

    def build(max_threads=None):
        stock = ASGIHandler()
        fast_handlers.append(PooledASGIHandler(max_threads))
        return {"stock": stock, "fast": fast_handlers[-1]}

    yield build
    for handler in fast_handlers:
        handler.pool.shutdown()


@pytest.fixture
def stacks(build):
    return build()


async def on_both(stacks, scenario):
    transcripts = {}
    for name, app in stacks.items():
        client = Client(app)
        await scenario(client)
        transcripts[name] = client.transcript
    assert transcripts["fast"] == transcripts["stock"]


async def form_token(client, path):
    response = await client.get(path)
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.body)[1].decode()


async def log_in(client, password=PASSWORD):
    token = await form_token(client, "/accounts/login/")
    data = {"username": "alice", "password": password, "csrfmiddlewaretoken": token}
    return await client.post("/accounts/login/", data)


async def test_security_headers(stacks):
    async def scenario(client):
        for path in ("/fast/async/", "/fast/sync/", "/accounts/login/"):
            response = await client.get(path)
            assert response.status == 200
            assert response.header("x-content-type-options") == "nosniff"
            assert response.header("referrer-policy") == "same-origin"
            assert response.header("cross-origin-opener-policy") == "same-origin"
            assert response.header("x-frame-options") == "DENY"
            assert response.header("strict-transport-security") is None
            response = await client.get(path, scheme="https")
            hsts = "max-age=3600; includeSubDomains; preload"
            assert response.header("strict-transport-security") == hsts

    await on_both(stacks, scenario)


async def test_https_redirect(settings, build):
    settings.SECURE_SSL_REDIRECT = True

    async def scenario(client):
        response = await client.get("/fast/sync/?a=1")
        assert response.status == 301
        assert response.header("location") == "https://testserver/fast/sync/?a=1"
        assert (await client.get("/fast/async/", scheme="https")).status == 200

    await on_both(build(), scenario)


@uses_database
async def test_vary_cookie(stacks):
    async def scenario(client):
        assert (await client.get("/fast/sync/")).header("vary") is None
        response = await client.get("/fast/token/")  # Sets the CSRF cookie.
        assert response.header("vary") == "Cookie" and response.cookie("csrftoken")
        response = await client.get("/fast/counter/")  # Saves the session.
        assert response.header("vary") == "Cookie" and response.cookie("sessionid")
        response = await client.get("/fast/whoami/")  # Reads it.
        assert response.header("vary") == "Cookie" and response.cookie("sessionid") is None
        assert (await client.get("/fast/async-whoami/")).header("vary") == "Cookie"
        assert (await client.get("/fast/sync/")).header("vary") is None

    await on_both(stacks, scenario)


async def test_append_slash(stacks):
    async def scenario(client):
        for path, location in [
            ("/fast/sync", "/fast/sync/"),
            ("/fast/async?a=1", "/fast/async/?a=1"),
            ("/accounts/login", "/accounts/login/"),
        ]:
            response = await client.get(path)
            assert response.status == 301 and response.header("location") == location
        assert (await client.get("/fast/nowhere")).status == 404

    await on_both(stacks, scenario)


async def test_disallowed_host(stacks):
    async def scenario(client):
        for path in ("/fast/sync/", "/fast/async/", "/accounts/login/"):
            assert (await client.get(path, host="evil.example")).status == 400
        assert (await client.post("/fast/form/", host="evil.example")).status == 400

    await on_both(stacks, scenario)


async def test_csrf(stacks, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000  # Larger bodies are spooled to disk.

    async def scenario(client):
        for path in ("/fast/form/", "/fast/async-form/"):
            response = await client.post(path, {"a": "1"})  # No CSRF cookie yet.
            assert response.status == 403 and REJECTED in response.body
        token = (await client.get("/fast/token/")).json()["token"]
        for path in ("/fast/form/", "/fast/async-form/"):
            assert (await client.post(path, {"a": "1"})).status == 403
            assert (await client.post(path, {"csrfmiddlewaretoken": "x" * 64})).status == 403
            data = {"a": "1", "csrfmiddlewaretoken": token}
            evil = [("origin", "http://evil.example")]
            assert (await client.post(path, data, headers=evil)).status == 403
            response = await client.post(path, data)
            assert response.status == 200 and response.json()["fields"] == sorted(data)
            response = await client.post(path, {"a": "1"}, headers=[("x-csrftoken", token)])
            assert response.status == 200
            assert (await client.post(path, {**data, "a": "x" * 2000})).status == 200
            body, content_type = multipart(data, {"file": b"content"})
            response = await client.request("POST", path, body=body, content_type=content_type)
            assert response.status == 200 and response.json()["files"] == ["file"]

    await on_both(stacks, scenario)


@uses_database
async def test_login_and_logout(stacks, alice):
    async def scenario(client):
        assert (await client.get("/fast/whoami/")).json() == {"user": ""}
        assert (await client.get("/fast/async-whoami/")).json() == {"user": ""}
        response = await client.get("/admin/")
        assert response.status == 302 and response.header("location").startswith("/admin/login/")

        response = await log_in(client, password="wrong")
        assert response.status == 200 and response.cookie("sessionid") is None
        csrf_cookie = client.cookies["csrftoken"]
        response = await log_in(client)
        assert response.status == 302 and response.cookie("sessionid")
        assert response.cookie("csrftoken") not in (None, csrf_cookie)  # Rotated.
        assert (await client.get("/fast/whoami/")).json() == {"user": "alice"}
        assert (await client.get("/fast/async-whoami/")).json() == {"user": "alice"}
        assert (await client.get("/admin/")).status == 200

        token = await form_token(client, "/")  # Of the page's logout form.
        response = await client.post("/accounts/logout/", {"csrfmiddlewaretoken": token})
        assert response.status == 302 and "sessionid" not in client.cookies
        assert (await client.get("/fast/whoami/")).json() == {"user": ""}
        assert (await client.get("/fast/async-whoami/")).json() == {"user": ""}

    await on_both(stacks, scenario)


@uses_database
async def test_session_writes_persist(stacks):
    async def scenario(client):
        paths = ["/fast/counter/", "/fast/async-counter/", "/fast/counter/", "/fast/async-counter/"]
        for n, path in enumerate(paths, 1):
            assert (await client.get(path)).json() == {"n": n}

    await on_both(stacks, scenario)


async def test_messages_are_shown_once(stacks):
    async def scenario(client):
        for path, text in [
            ("/fast/add-message/", "from a sync view"),
            ("/fast/async-add-message/", "from an async view"),
        ]:
            assert (await client.get(path)).status == 302
            assert (await client.get("/fast/messages/")).json() == {"messages": [text]}
            assert (await client.get("/fast/messages/")).json() == {"messages": []}

    await on_both(stacks, scenario)


@pytest.fixture
def events():
    """urls.EVENTS, with Django's request_started and request_finished signals in it."""
    urls.EVENTS.clear()

    def started(**kwargs):
        urls.EVENTS.append(("started", threading.current_thread()))

    def finished(**kwargs):
        urls.EVENTS.append(("finished", threading.current_thread()))

    request_started.connect(started)
    request_finished.connect(finished)
    yield urls.EVENTS
    request_started.disconnect(started)
    request_finished.disconnect(finished)


def one_thread_each(events):
    """The thread of each request in `events`, which must all be complete and on one thread."""
    threads = []
    for start in range(0, len(events), 4):
        request = events[start : start + 4]
        assert [event for event, _ in request] == ["started", "view", "view done", "finished"]
        assert len({thread for _, thread in request}) == 1
        threads.append(request[0][1])
    return threads


async def test_each_request_runs_in_one_thread_and_threads_are_reused(stacks, events):
    threads, started = {}, {}
    for name, app in stacks.items():
        client = Client(app)
        await client.get("/fast/sync/")
        events.clear()
        with count_hops() as counts:
            for _ in range(5):
                await client.get("/fast/slow/")
        threads[name] = one_thread_each(events)
        started[name] = counts["threads"]
    assert len(set(threads["stock"])) == 5 and started["stock"] >= 5  # A new one per request.
    assert len(set(threads["fast"])) == 1 and started["fast"] == 0


async def test_at_most_max_threads_requests_run_at_once(build, events):
    app = build(max_threads=2)["fast"]
    slow = [Client(app).get("/fast/slow/?seconds=0.05") for _ in range(4)]
    responses = await asyncio.gather(*slow)
    assert [response.status for response in responses] == [200] * 4
    assert len(set(thread for event, thread in events if event == "view")) == 2
    assert app.pool.started == len(app.pool.idle) == 2


async def test_a_task_that_outlives_its_request_gets_no_thread(stacks):
    late_call = {}
    for name, app in stacks.items():
        assert (await Client(app).get("/fast/background/")).status == 200
        await urls.SEEN["task"]
        late_call[name] = urls.SEEN["late call"]
    # Django's stack runs it anyway, in a thread that belongs to no request.
    assert isinstance(late_call["stock"], threading.Thread)
    assert isinstance(late_call["fast"], RuntimeError)
    assert "ThreadSensitiveContext has exited" in str(late_call["fast"])


async def test_a_client_that_goes_away_leaks_nothing(stacks, events):
    app = stacks["fast"]
    await Client(app).get("/fast/sync/")
    threads_before = set(threading.enumerate())

    async def go_away_while_the_view_runs(gone):
        while not any(event == "view" for event, _ in events):
            await asyncio.sleep(0.005)
        gone.set()
        await asyncio.sleep(0.05)  # Django cancels the request meanwhile.
        urls.SLOW_VIEW_MAY_FINISH.set()

    for _ in range(2):
        events.clear()
        urls.SLOW_VIEW_MAY_FINISH.clear()
        gone = asyncio.Event()
        leaving = asyncio.create_task(go_away_while_the_view_runs(gone))
        assert await call(app, http_scope("GET", "/fast/slow/"), disconnect=gone) is None
        await leaving
        # Nothing was sent; the view ran to its end, then request_finished (which closes
        # database connections), in the same thread.
        one_thread_each(events)
    assert app.pool.started == len(app.pool.idle) == 1
    assert set(threading.enumerate()) <= threads_before  # No new thread either.


async def post_in_chunks(app, chunks, declared=None):
    """POST `chunks` as separate body messages; the response and the chunks read from it."""
    headers = [] if declared is None else [("content-length", str(declared))]
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages[-1]["more_body"] = False
    read = []

    async def receive():
        if messages:
            read.append(messages.pop(0))
            return read[-1]
        await asyncio.sleep(3600)  # The client waits for its response.

    sent = []

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(http_scope("POST", "/fast/body-size/", headers), receive, send), 10)
    return sent, len(read)


async def test_a_body_over_the_limit_is_refused_before_it_is_read(build, settings, caplog):
    settings.REQUEST_MAX_BODY_BYTES = 1000
    app = build()["fast"]

    sent, read = await post_in_chunks(app, [b"x" * 600, b"x" * 600], declared=1200)

    assert (sent[0]["type"], sent[0]["status"]) == ("http.response.start", 413)
    assert read == 0
    assert "Request body too large: /fast/body-size/" in caplog.text


async def test_a_body_without_a_length_is_cut_off_once_it_passes_the_limit(build, settings):
    settings.REQUEST_MAX_BODY_BYTES = 1000
    app = build()["fast"]

    sent, read = await post_in_chunks(app, [b"x" * 600] * 5)

    assert sent[0]["status"] == 413
    assert read == 2
    assert app.pool.started == 0  # Refused before the request got a thread.


async def test_a_body_within_the_limit_reaches_the_view(build, settings):
    settings.REQUEST_MAX_BODY_BYTES = 1000
    app = build()["fast"]

    sent, _ = await post_in_chunks(app, [b"x" * 600, b"x" * 400], declared=1000)

    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"bytes": 1000}


async def hops_per_request(app):
    """Hops of each kind of request, made by a signed-in browser."""
    client = Client(app)
    assert (await log_in(client)).status == 302
    token = {"csrfmiddlewaretoken": client.cookies["csrftoken"]}
    body, content_type = multipart(token, {"file": b"content"})
    requests = {
        "async view": lambda: client.get("/fast/async/"),
        "sync view": lambda: client.get("/fast/sync/"),
        "login page": lambda: client.get("/accounts/login/"),
        "signed-in sync view": lambda: client.get("/fast/whoami/"),
        "signed-in async view": lambda: client.get("/fast/async-whoami/"),
        "session write": lambda: client.get("/fast/counter/"),
        "message added": lambda: client.get("/fast/add-message/"),
        "form": lambda: client.post("/fast/form/", token),
        "multipart form": lambda: client.request("POST", "/fast/form/", body, content_type),
        "form without token": lambda: client.post("/fast/form/", {}),
    }
    statuses = {"message added": 302, "form without token": 403}
    hops = {}
    for request, send in requests.items():
        await send()  # Warm up.
        with count_hops() as counts:
            response = await send()
        assert response.status == statuses.get(request, 200)
        hops[request] = counts["hops"]
    return hops


@uses_database
async def test_the_fast_stack_makes_far_fewer_hops(stacks, alice):
    stock = await hops_per_request(stacks["stock"])
    fast = await hops_per_request(stacks["fast"])
    # Django's stack makes 15 for an async view: 13 around its middleware, then request_started
    # and response.close(). Only these two are left, and the hops of the work done in threads.
    assert fast == {
        "async view": 2,
        "sync view": 3,  # The view.
        "login page": 4,  # The view, the template's rendering.
        "signed-in sync view": 3,  # The view, which loads the session and the user.
        "signed-in async view": 4,  # Two queries: the session, the user.
        "session write": 4,  # The view, the session's save.
        "message added": 4,  # The view, the messages' storing.
        "form": 3,  # The view.
        "multipart form": 4,  # CSRF's reading of the body, the view.
        "form without token": 3,  # CSRF's failure view.
    }
    for request in stock:
        assert fast[request] <= stock[request] - 12, request


class UndeclaredSessionMiddleware(middleware.SessionMiddleware):
    """A project's subclass, which says nothing about where its hooks may run."""


class DeclaredSessionMiddleware(middleware.SessionMiddleware):
    run_hooks_on_loop = True


@pytest.mark.parametrize(
    ("subclass", "hops"), [(UndeclaredSessionMiddleware, 4), (DeclaredSessionMiddleware, 2)]
)
async def test_subclasses_get_djangos_dispatch_unless_they_declare_theirs(settings, subclass, hops):
    settings.MIDDLEWARE = [
        f"{__name__}.{subclass.__name__}" if path.endswith(".SessionMiddleware") else path
        for path in settings.MIDDLEWARE
    ]
    app = PooledASGIHandler()
    try:
        await Client(app).get("/fast/async/")
        with count_hops() as counts:
            await Client(app).get("/fast/async/")
    finally:
        app.pool.shutdown()
    assert counts["hops"] == hops
