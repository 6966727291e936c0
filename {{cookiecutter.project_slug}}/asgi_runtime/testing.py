"""
Test clients that go through the project's ASGI application, as production requests do.

Django's test `Client` and `AsyncClient` call a test handler of Django's own, built from
settings.MIDDLEWARE: they skip asgi.py, handler.py (the request threads, the probes, the body
cap) and middleware.py. These are the same classes with one change: each request is sent to
ASGI_APPLICATION as an ASGI server sends it, and the response is read back from the messages the
application sent. Everything else (cookies, `follow`, `force_login`, `response.json()`,
`assertContains`, templates and context) is Django's.

As in production, each request's code runs in a thread of its own, on database connections of
its own, which see only committed data: a test that makes requests touching the database needs
`@pytest.mark.django_db(transaction=True)` (or Django's TransactionTestCase).
`enforce_csrf_checks` works as in Django's clients (off by default).

The project's conftest.py makes these pytest-django's `client` and `async_client` fixtures,
and closes, after each test, the connections of the thread async tests query the database from
(close_shared_thread_connections).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from io import BytesIO
from typing import Any
from urllib.parse import quote

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpResponse
from django.test import client
from django.utils.module_loading import import_string

from .handler import SKIP_CSRF_CHECKS


class ApplicationHandler:
    """Calls the ASGI application with one request; its response as an HttpResponse."""

    def __init__(self, enforce_csrf_checks: bool = True, application: Any = None) -> None:
        self.enforce_csrf_checks = enforce_csrf_checks
        self.application = application

    async def __call__(self, scope: dict[str, Any]) -> HttpResponse:
        application = self.application or import_string(settings.ASGI_APPLICATION)
        body_file = scope.pop("_body_file", None)
        body = body_file.read() if body_file is not None else b""
        scope = {"asgi": {"version": "3.0"}, "http_version": "1.1", **scope}
        if not self.enforce_csrf_checks:
            scope[SKIP_CSRF_CHECKS] = True
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        complete = asyncio.Event()
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await complete.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    complete.set()

        await application(scope, receive, send)
        complete.set()
        if not start:
            raise AssertionError(f"The application sent no response to {scope['path']}.")
        response = HttpResponse(b"".join(chunks), status=start["status"])
        del response.headers["Content-Type"]
        for name, value in start["headers"]:
            name, value = name.decode("latin-1"), value.decode("latin-1")
            if name.lower() == "set-cookie":
                response.cookies.update(SimpleCookie(value))
            elif name in response.headers:
                response.headers[name] += f", {value}"
            else:
                response.headers[name] = value
        # (The ignores: attributes Django's clients add to their responses, as here, and its
        # stubs declare on redirects and test responses only.)
        if "Location" in response.headers:
            # As on Django's redirect responses: `follow` and assertRedirects read it.
            response.url = response.headers["Location"]  # type: ignore[attr-defined]
        # What the application saw, rebuilt: Django's clients attach the request they made.
        response.asgi_request = response.wsgi_request = ASGIRequest(scope, BytesIO(body))  # type: ignore[attr-defined]
        return response


class AsyncClient(client.AsyncClient):
    """django.test.AsyncClient, through the project's ASGI application."""

    def __init__(self, enforce_csrf_checks: bool = False, *args: Any, **kwargs: Any) -> None:
        application = kwargs.pop("application", None)
        super().__init__(enforce_csrf_checks, *args, **kwargs)
        # Not a subclass of Django's handler: called as Django's client calls it, with a scope.
        self.handler = ApplicationHandler(enforce_csrf_checks, application)  # type: ignore[assignment]


class SyncApplicationHandler:
    """The same for django.test.Client: a WSGI environ in, the application run on an event loop
    of its own in another thread, as a server runs it."""

    def __init__(self, enforce_csrf_checks: bool = True, application: Any = None) -> None:
        self.handler = ApplicationHandler(enforce_csrf_checks, application)

    def __call__(self, environ: dict[str, Any]) -> HttpResponse:
        scope = scope_of(environ)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-server") as server:
            return server.submit(asyncio.run, self.handler(scope)).result()


class Client(client.Client):
    """django.test.Client, through the project's ASGI application."""

    def __init__(self, enforce_csrf_checks: bool = False, *args: Any, **kwargs: Any) -> None:
        application = kwargs.pop("application", None)
        super().__init__(enforce_csrf_checks, *args, **kwargs)
        # Not a subclass of Django's handler: called as Django's client calls it, with an environ.
        self.handler = SyncApplicationHandler(enforce_csrf_checks, application)  # type: ignore[assignment]


def scope_of(environ: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope of the request Django's RequestFactory describes as a WSGI environ."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
        else:
            continue
        if value in ("", None):
            continue
        name = name.replace("_", "-").lower()
        headers.append((name.encode("latin-1"), str(value).encode("latin-1")))
    # PATH_INFO holds the path's bytes as latin-1 characters (PEP 3333); ASGI wants the text.
    path = environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
    return {
        "type": "http",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ["wsgi.url_scheme"],
        "path": path,
        "raw_path": quote(path).encode("ascii"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": environ.get("SCRIPT_NAME", ""),
        "headers": headers,
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), 0),
        "server": (environ["SERVER_NAME"], int(environ["SERVER_PORT"])),
        "_body_file": environ["wsgi.input"],
    }


def close_shared_thread_connections() -> None:
    """Close the database connections of asgiref's shared thread, where an async test's ORM calls
    run.

    pytest-asyncio runs an async test on an event loop in the main thread, with no async_to_sync
    around it (Django's own test cases have one: their ORM calls run in the main thread). So
    `await Model.objects.acreate()` in a test, or a consumer's database_sync_to_async, runs in
    the one thread asgiref keeps for such calls, on a connection of that thread's own, which no
    request ends: it stays open, lent out by the connection pool, until the process exits. On
    PostgreSQL, pytest-django then cannot drop the test database ("being accessed by other
    users"). Run after each test, this returns it (to the pool, which the teardown closes).
    """
    SyncToAsync.single_thread_executor.submit(connections.close_all).result()
