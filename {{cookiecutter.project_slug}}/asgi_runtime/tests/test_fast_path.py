"""
middleware.py and handler.py answer as Django's own stack does, with far fewer thread hops.

The first tests run each scenario on two handlers built here from the project's settings:
"stock", Django's ASGIHandler with Django's default middleware (the project's other middleware
in place), and "fast", handler.py's FastASGIHandler with MIDDLEWARE. A scenario asserts what
a browser must see; then both stacks' transcripts (status, every header in order, body; with
dates and random values masked) must be identical. The others check what handler.py promises,
and count the hops.
"""

import asyncio
import contextlib
import errno
import gc
import itertools
import json
import re
import tempfile
import threading

import django
import pytest
from allauth.account.models import EmailAddress
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished, request_started
from django.http import JsonResponse
from django.middleware import csrf

from asgi_runtime import middleware
from asgi_runtime.handler import FastASGIHandler

from .fast_path import urls
from .fast_path.client import Client, call, count_hops, http_scope, multipart

CSP_MIDDLEWARE = (
    "django.middleware.csp.ContentSecurityPolicyMiddleware"
    if django.VERSION >= (6, 0)
    else "csp.middleware.CSPMiddleware"
)
# Django's default MIDDLEWARE and the Content Security Policy middleware (django-csp's on Django
# 5.2), whose classes the project's middleware.py subclasses.
DJANGO_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    CSP_MIDDLEWARE,
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
    user = get_user_model().objects.create_superuser("alice", "alice@example.com", PASSWORD)
    # Verified: production's settings want it before the first login.
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


def test_settings_name_djangos_middleware_and_the_handler_loads_the_fast_ones():
    assert [path for path in django_settings.MIDDLEWARE if path in DJANGO_MIDDLEWARE] == (
        DJANGO_MIDDLEWARE
    )
    assert set(middleware.LOOP_DISPATCH) == set(DJANGO_MIDDLEWARE)
    handler = FastASGIHandler()
    # The CSRF middleware's process_view is the one hook Django keeps a list of.
    hooks = handler._view_middleware  # type: ignore[attr-defined]  # Django's, private.
    assert [type(hook.__self__) for hook in hooks] == [middleware.CsrfViewMiddleware]


@pytest.fixture
def build():
    """build() makes both stacks, from the settings in force when it is called."""

    def build():
        return {"stock": ASGIHandler(), "fast": FastASGIHandler()}

    return build


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
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.body)
    assert token, "no CSRF token on the page"
    return token[1].decode()


async def log_in(client, password=PASSWORD):
    # The site's login, the way into the admin too (urls.py): allauth's view, its rate limits
    # in the cache, its messages, then Django's login(), which rotates the session and the CSRF
    # token.
    token = await form_token(client, "/accounts/login/")
    data = {"login": "alice", "password": password, "csrfmiddlewaretoken": token}
    return await client.post("/accounts/login/?next=/admin/", data)


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


def directives(response):
    """The Content-Security-Policy header, by directive (django-csp orders them its own way)."""
    policy = response.header("content-security-policy")
    return dict(directive.split(" ", 1) for directive in policy.split("; "))


async def test_content_security_policy(stacks):
    async def scenario(client):
        nonces = set()
        for path in ("/", "/accounts/login/", "/accounts/signup/"):
            response = await client.get(path)
            assert response.status == 200
            policy = directives(response)
            assert policy["default-src"] == "'self'"
            sources = f"'self' 'nonce-{response.nonce()}'"
            assert policy["script-src"] == policy["style-src"] == sources
            # The page's own inline style has the nonce of the header.
            assert f'<style nonce="{response.nonce()}">'.encode() in response.body
            nonces.add(response.nonce())
        assert len(nonces) == 3  # A nonce of its own for each response.
        # The nonce is left out of the header of a response that did not use it.
        responses = [("/fast/sync/", 200), ("/fast/async/", 200), ("/fast/nowhere", 404)]
        for path, status in responses:
            response = await client.get(path)
            assert response.status == status
            policy = directives(response)
            assert policy["script-src"] == policy["style-src"] == "'self'"
        response = await client.post("/fast/form/", {"a": "1"})  # CSRF's failure page.
        assert response.status == 403 and response.header("content-security-policy")
        response = await client.get("/accounts/login/")
        assert response.status == 200 and response.header("content-security-policy")

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
        assert response.status == 302 and response.header("location") == "/admin/"
        assert response.cookie("sessionid")
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


async def test_each_request_runs_in_a_thread_of_its_own(stacks, events):
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
    assert len(set(threads["stock"])) == 5 and started["stock"] >= 5
    # One thread started per request, and none to join it afterwards.
    assert len(set(threads["fast"])) == 5 and started["fast"] == 5


async def test_a_request_that_runs_no_synchronous_code_takes_no_thread(stacks):
    app = stacks["fast"]
    await Client(app).get("/fast/async/")
    with count_hops() as counts:
        assert (await Client(app).get("/fast/async/")).status == 200
    assert counts["threads"] == 0
    # A receiver of the project's own may do anything: it runs in the request's thread.
    receivers_ran_in = []

    def receiver(**kwargs):
        receivers_ran_in.append(threading.current_thread())

    for signal in (request_started, request_finished):
        signal.connect(receiver)
        try:
            with count_hops() as counts:
                assert (await Client(app).get("/fast/async/")).status == 200
        finally:
            signal.disconnect(receiver)
        assert counts["threads"] == 1
        assert receivers_ran_in.pop().name.startswith("asgi-request")


def request_threads():
    return {thread for thread in threading.enumerate() if thread.name.startswith("asgi-request")}


@uses_database
async def test_nothing_a_request_leaves_in_its_thread_reaches_the_next(stacks, alice):
    for app in stacks.values():
        client = Client(app)
        assert (await client.get("/fast/leave-state/?user=alice")).json() == {"left": "alice"}
        for _ in range(3):
            response = await client.get("/fast/read-state/")
            assert response.json() == {"thread user": None, "connection tenant": None}


@uses_database
async def test_a_transaction_left_open_fails_no_other_request(stacks, alice):
    try:
        for app in stacks.values():
            client = Client(app)
            assert (await client.get("/fast/leave-transaction-open/")).status == 200
            for _ in range(5):
                assert (await client.get("/fast/count-users/")).json() == {"users": 1}
    finally:
        for left_open in urls.SEEN.pop("left open", []):
            left_open.close()


async def test_a_task_that_outlives_its_request_still_runs_its_sync_calls(stacks):
    late_call = {}
    for name, app in stacks.items():
        assert (await Client(app).get("/fast/background/")).status == 200
        await urls.SEEN["task"]
        late_call[name] = urls.SEEN["late call"]
    # As under Django: in a thread of its own, once the request is over.
    for name in stacks:
        assert isinstance(late_call[name], threading.Thread), late_call[name]


async def test_threads_end_with_their_requests(stacks, events):
    app = stacks["fast"]
    await Client(app).get("/fast/sync/")

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
    for _ in range(50):
        if not request_threads():
            break
        await asyncio.sleep(0.02)
    assert request_threads() == set()


async def test_an_async_view_waits_without_a_thread_slot(settings, events):
    settings.ASGI_REQUEST_THREADS = 1
    app = FastASGIHandler()
    # A stream that takes its time, and a client that never reads: neither holds the slot.
    urls.SLOW_VIEW_MAY_FINISH.set()
    never_read = asyncio.Event()

    async def stalled_client():
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)

        async def send(message):
            if message["type"] == "http.response.body":
                await never_read.wait()

        await app(http_scope("GET", "/fast/stream/?chunks=100&every=0.01"), receive, send)

    stalled = [asyncio.create_task(stalled_client()) for _ in range(3)]
    await asyncio.sleep(0.1)
    try:
        for path in ("/fast/sync/", "/fast/async/"):
            response = await asyncio.wait_for(Client(app).get(path), 2)
            assert response.status == 200
    finally:
        for task in stalled:
            task.cancel()
        await asyncio.gather(*stalled, return_exceptions=True)


async def test_at_most_asgi_request_threads_run_code_at_once(settings, events):
    settings.ASGI_REQUEST_THREADS = 2
    app = FastASGIHandler()
    slow = [Client(app).get("/fast/slow/?seconds=0.05") for _ in range(6)]
    responses = await asyncio.gather(*slow)
    assert [response.status for response in responses] == [200] * 6
    running = most = 0
    for event, _ in events:
        running += {"view": 1, "view done": -1}.get(event, 0)
        most = max(most, running)
    assert most == 2


async def test_a_request_that_waits_too_long_for_a_thread_gets_503(settings, events, caplog):
    settings.ASGI_REQUEST_THREADS = 1
    settings.ASGI_REQUEST_QUEUE_TIMEOUT = 0.2
    app = FastASGIHandler()
    urls.SLOW_VIEW_MAY_FINISH.clear()
    try:
        holding = asyncio.create_task(Client(app).get("/fast/slow/"))
        while not any(event == "view" for event, _ in events):
            await asyncio.sleep(0.01)
        # An async view runs no code of the application in a thread: it never waits.
        assert (await asyncio.wait_for(Client(app).get("/fast/async/"), 1)).status == 200
        response = await asyncio.wait_for(Client(app).get("/fast/sync/"), 5)
        assert response.status == 503
        assert response.header("retry-after") == "1"
    finally:
        urls.SLOW_VIEW_MAY_FINISH.set()
    assert (await holding).status == 200
    assert "Service busy" in caplog.text
    # The slot came back: the next request gets it at once.
    assert (await asyncio.wait_for(Client(app).get("/fast/sync/"), 2)).status == 200


async def test_a_full_queue_answers_503_at_once(settings, events):
    settings.ASGI_REQUEST_THREADS = 1
    settings.ASGI_REQUEST_QUEUE_LENGTH = 1
    app = FastASGIHandler()
    urls.SLOW_VIEW_MAY_FINISH.clear()
    try:
        holding = asyncio.create_task(Client(app).get("/fast/slow/"))
        while not any(event == "view" for event, _ in events):
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(Client(app).get("/fast/sync/"))
        await asyncio.sleep(0.05)
        response = await asyncio.wait_for(Client(app).get("/fast/sync/"), 2)
        assert response.status == 503
    finally:
        urls.SLOW_VIEW_MAY_FINISH.set()
    assert (await holding).status == (await queued).status == 200


async def test_a_request_its_server_cancels_leaves_no_unretrieved_error(events):
    """A stopping server (daphne, a reload) cancels the requests in flight as their clients'
    connections close: Django's disconnect listener, which its handler no longer awaits, must
    not end with an error that asyncio logs as "Task exception was never retrieved"."""
    app = FastASGIHandler()
    loop = asyncio.get_running_loop()
    logged = []
    default_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: logged.append(context["message"]))
    urls.SLOW_VIEW_MAY_FINISH.clear()
    try:
        gone = asyncio.Event()
        request = asyncio.create_task(call(app, http_scope("GET", "/fast/slow/"), disconnect=gone))
        while not any(event == "view" for event, _ in events):
            await asyncio.sleep(0.01)
        gone.set()  # The connection closes...
        request.cancel()  # ...and the server cancels the request, in the same turn of the loop.
        with contextlib.suppress(asyncio.CancelledError):
            await request
        await asyncio.sleep(0.05)
        gc.collect()
    finally:
        urls.SLOW_VIEW_MAY_FINISH.set()
        loop.set_exception_handler(default_handler)
    assert logged == []


async def test_a_queued_request_whose_client_left_never_runs(settings, events):
    settings.ASGI_REQUEST_THREADS = 1
    app = FastASGIHandler()
    urls.SLOW_VIEW_MAY_FINISH.clear()
    try:
        holding = asyncio.create_task(Client(app).get("/fast/slow/"))
        while not any(event == "view" for event, _ in events):
            await asyncio.sleep(0.01)
        gone = asyncio.Event()
        leaving = [
            asyncio.create_task(call(app, http_scope("GET", "/fast/slow/"), disconnect=gone))
            for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        gone.set()
        await asyncio.sleep(0.05)
    finally:
        urls.SLOW_VIEW_MAY_FINISH.set()
    assert (await holding).status == 200
    assert await asyncio.gather(*leaving) == [None] * 3
    assert [event for event, _ in events].count("view") == 1


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
    settings.SECURE_HSTS_SECONDS = 3600
    app = build()["fast"]

    sent, read = await post_in_chunks(app, [b"x" * 600, b"x" * 600], declared=1200)

    assert (sent[0]["type"], sent[0]["status"]) == ("http.response.start", 413)
    assert read == 0
    assert "Too Large: /fast/body-size/" in caplog.text
    # Through the middleware, like any response.
    headers = dict(sent[0]["headers"])
    assert headers[b"X-Content-Type-Options"] == b"nosniff"


async def test_a_refused_body_keeps_djangos_protections(build, settings):
    settings.REQUEST_MAX_BODY_BYTES = 1000
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    app = build()["fast"]
    client = Client(app)
    big = {"a": "x" * 2000}

    response = await client.post("/fast/body-size/", big)
    assert response.status == 301  # To HTTPS first, as for any request.
    assert (await client.post("/fast/body-size/", big, host="evil.example")).status == 400
    response = await client.post("/fast/body-size/", big, scheme="https")
    assert response.status == 413
    assert response.header("strict-transport-security").startswith("max-age=3600")


async def test_a_body_without_a_length_is_cut_off_once_it_passes_the_limit(build, settings):
    settings.REQUEST_MAX_BODY_BYTES = 1000
    app = build()["fast"]

    sent, read = await post_in_chunks(app, [b"x" * 600] * 5)

    assert sent[0]["status"] == 413
    assert read == 2


async def test_a_body_within_the_limit_reaches_the_view(build, settings):
    settings.REQUEST_MAX_BODY_BYTES = 1000
    app = build()["fast"]

    sent, _ = await post_in_chunks(app, [b"x" * 600, b"x" * 400], declared=1000)

    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"bytes": 1000}


async def test_the_bodies_a_process_holds_at_once_are_bounded(build, settings):
    settings.REQUEST_BODIES_MAX_BYTES = 1000
    app = build()["fast"]
    stalled = asyncio.Event()
    gone = asyncio.Event()

    async def holding_receive():
        if not stalled.is_set():
            stalled.set()
            return {"type": "http.request", "body": b"x" * 600, "more_body": True}
        await gone.wait()  # The rest of the body never comes, then the client leaves.
        return {"type": "http.disconnect"}

    async def ignore(message):
        pass

    holding = app(http_scope("POST", "/fast/body-size/"), holding_receive, ignore)
    holder = asyncio.create_task(holding)
    await stalled.wait()
    await asyncio.sleep(0.05)

    # 600 bytes held: another 600 would pass 1,000.
    sent, read = await post_in_chunks(app, [b"y" * 300, b"y" * 300])
    assert (sent[0]["status"], read) == (503, 2)
    assert dict(sent[0]["headers"])[b"Retry-After"] == b"5"
    assert (await post_in_chunks(app, [b"y" * 400]))[0][0]["status"] == 200

    gone.set()
    await asyncio.wait_for(holder, 10)
    # The body of a client that left counts no more.
    assert (await post_in_chunks(app, [b"y" * 1000]))[0][0]["status"] == 200


async def test_a_body_that_finds_the_disk_full_gets_507(build, settings, monkeypatch):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 100
    app = build()["fast"]
    written, write = [], tempfile.SpooledTemporaryFile.write

    def no_room(self, data):
        if not data:
            return write(self, data)
        written.append(len(data))
        raise OSError(errno.ENOSPC, "No space left on device")

    # What a spooled body writes once it is on disk.
    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "write", no_room)

    sent, read = await post_in_chunks(app, [b"x" * 600, b"x" * 600])

    assert (sent[0]["status"], read, written) == (507, 1, [600])
    assert b"No room left" in sent[1]["body"]


async def hops_per_request(app):
    """Hops of each kind of request, made by a signed-in browser."""
    client = Client(app)
    assert (await log_in(client)).status == 302
    token = {"csrfmiddlewaretoken": client.cookies["csrftoken"]}
    body, content_type = multipart(token, {"file": b"content"})
    requests = {
        "async view": lambda: client.get("/fast/async/"),
        "sync view": lambda: client.get("/fast/sync/"),
        "form page": lambda: client.get("/admin/password_change/"),
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
    # and response.close(). Only these two are left (on the loop while the request has no
    # thread: see test_a_request_that_runs_no_synchronous_code_takes_no_thread), and the hops of
    # the work done in threads.
    assert fast == {
        "async view": 2,
        "sync view": 3,  # The view.
        "form page": 4,  # The view, the template's rendering.
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
    app = FastASGIHandler()
    await Client(app).get("/fast/async/")
    with count_hops() as counts:
        await Client(app).get("/fast/async/")
    assert counts["hops"] == hops


# A project's own CSRF rules, each written once and subclassed from Django's class (run on
# Django's stack) and from middleware.py's (run on the fast one), with and without the flag.
# (The ignores: mypy sees a mixin's methods without the class they are mixed into.)
class Stricter:
    """Refuses unsafe requests without X-Requested-With, through the failure view."""

    def process_view(self, request, callback, callback_args, callback_kwargs):
        if request.method == "POST" and "x-requested-with" not in request.headers:
            return self._reject(request, "X-Requested-With missing")  # type: ignore[attr-defined]
        return super().process_view(request, callback, callback_args, callback_kwargs)  # type: ignore[misc]


class Exempting:
    """Lets /fast/form/ through without a token."""

    def process_view(self, request, callback, callback_args, callback_kwargs):
        if request.path == "/fast/form/":
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)  # type: ignore[misc]


class JsonFailure:
    """Answers a CSRF failure with JSON."""

    def _reject(self, request, reason):
        return JsonResponse({"csrf": "failed", "reason": reason}, status=403)


RULES = (Stricter, Exempting, JsonFailure)
for rule, base, flag in itertools.product(
    RULES, (csrf.CsrfViewMiddleware, middleware.CsrfViewMiddleware), (False, True)
):
    namespace = {"run_hooks_on_loop": True} if flag else {}
    name = f"{rule.__name__}{'Project' if base is middleware.CsrfViewMiddleware else 'Django'}"
    name += "OnLoop" if flag else ""
    globals()[name] = type(name, (rule, base), namespace)


async def csrf_rule_scenario(client):
    token = (await client.get("/fast/token/")).json()["token"]
    with_token = {"a": "1", "csrfmiddlewaretoken": token}
    ajax = [("x-requested-with", "XMLHttpRequest")]
    for path in ("/fast/form/", "/fast/async-form/"):
        await client.post(path, {"a": "1"})
        await client.post(path, {"a": "1"}, headers=ajax)
        await client.post(path, with_token)
        await client.post(path, with_token, headers=ajax)


@uses_database
@pytest.mark.parametrize("on_loop", [False, True], ids=["no flag", "run_hooks_on_loop"])
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
async def test_a_csrf_subclass_behaves_as_the_same_subclass_of_djangos(settings, rule, on_loop):
    def stack(base, handler):
        name = f"{rule.__name__}{base}{'OnLoop' if on_loop else ''}"
        settings.MIDDLEWARE = [
            f"{__name__}.{name}" if path.endswith(".CsrfViewMiddleware") else path
            for path in DJANGO_MIDDLEWARE
        ]
        return handler()

    stacks = {"stock": stack("Django", ASGIHandler), "fast": stack("Project", FastASGIHandler)}
    await on_both(stacks, csrf_rule_scenario)


@uses_database
async def test_the_rules_differ_from_djangos_own(settings):
    """The scenario tells the rules apart: a subclass whose override were lost would fail."""
    transcripts = set()
    for rule in (None, *RULES):
        name = f"{rule.__name__}Project" if rule else None
        settings.MIDDLEWARE = [
            f"{__name__}.{name}" if name and path.endswith(".CsrfViewMiddleware") else path
            for path in DJANGO_MIDDLEWARE
        ]
        client = Client(FastASGIHandler())
        await csrf_rule_scenario(client)
        transcripts.add(
            repr([(path, status, body) for _, path, status, _, body in client.transcript])
        )
    assert len(transcripts) == 4


async def test_a_large_form_is_parsed_in_a_thread(stacks):
    client = Client(stacks["fast"])
    token = (await client.get("/fast/token/")).json()["token"]
    small = {"a": "x" * 1000, "csrfmiddlewaretoken": token}
    large = {"a": "x" * (middleware.LOOP_PARSE_MAX_BYTES + 1), "csrfmiddlewaretoken": token}
    hops = {}
    for name, data in (("small", small), ("large", large)):
        with count_hops() as counts:
            assert (await client.post("/fast/form/", data)).status == 200
        hops[name] = counts["hops"]
    assert hops["large"] == hops["small"] + 1  # CSRF's reading of the body.
