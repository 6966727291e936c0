"""A browser-like client that calls an ASGI application as a server does, and counts hops."""

import asyncio
import json
import re
import threading
from collections import Counter
from contextlib import contextmanager
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

from asgiref.sync import SyncToAsync

HOST = "testserver"


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # [(lower-case name, value)], in order
        self.body = body

    def header(self, name):
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None

    def nonce(self):
        """The nonce in the Content-Security-Policy header, or None."""
        found = re.search(r"'nonce-([^']+)'", self.header("content-security-policy") or "")
        return found and found[1]

    def cookie(self, name):
        """The value this response sets for cookie `name`, or None."""
        for key, value in self.headers:
            if key == "set-cookie" and value.startswith(f"{name}="):
                return SimpleCookie(value)[name].value
        return None

    def json(self):
        return json.loads(self.body)


def normalize(response):
    """Status, every header in order and the body, with dates and random values masked."""
    headers = []
    for name, value in response.headers:
        if name in ("date", "expires", "last-modified"):
            value = "<date>"
        elif name == "set-cookie":
            value = re.sub(r"(?i)expires=[^;]+", "expires=<date>", value)
            value = re.sub(r'^([^=]+)=(?!"";)[^;]+', r"\1=<value>", value)
        elif name == "content-security-policy":
            value = re.sub(r"'nonce-[^']+'", "'nonce-<nonce>'", value)
        headers.append((name, value))
    body = re.sub(rb"\b[A-Za-z0-9]{64}\b", b"<token>", response.body)
    body = re.sub(rb"\b[a-z0-9]{32}\b", b"<key>", body)
    body = re.sub(rb'nonce="[^"]*"', b'nonce="<nonce>"', body)
    return response.status, headers, body


class Client:
    """Sends one request per call (scope, body, then `http.disconnect` once the response is
    complete), keeps cookies, and records every exchange in `transcript`."""

    def __init__(self, app):
        self.app = app
        self.cookies = {}
        self.transcript = []

    async def get(self, path, **kwargs):
        return await self.request("GET", path, **kwargs)

    async def post(self, path, data=None, **kwargs):
        kwargs.setdefault("content_type", "application/x-www-form-urlencoded")
        return await self.request("POST", path, body=urlencode(data or {}).encode(), **kwargs)

    async def request(
        self, method, path, body=b"", content_type=None, headers=(), host=HOST, scheme="http"
    ):
        if self.cookies:
            cookies = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
            headers = [*headers, ("cookie", cookies)]
        if body or method == "POST":
            headers = [*headers, ("content-length", str(len(body)))]
        if content_type:
            headers = [*headers, ("content-type", content_type)]
        scope = http_scope(method, path, headers, host, scheme)
        response = await call(self.app, scope, body)
        for name, value in response.headers:
            if name == "set-cookie":
                morsel = next(iter(SimpleCookie(value).values()))
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[morsel.key] = morsel.value
                else:
                    self.cookies.pop(morsel.key, None)
        self.transcript.append((method, path, *normalize(response)))
        return response


def http_scope(method, path, headers=(), host=HOST, scheme="http"):
    url = urlsplit(path)
    headers = [("host", host), *headers]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "root_path": "",
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
        "client": ("127.0.0.1", 50000),
        "server": (host, 80),
    }


async def call(app, scope, body=b"", disconnect=None):
    """Call `app` with one request: the response, or None if nothing was sent. The client goes
    away once the response is complete, or as soon as `disconnect` (an asyncio.Event) is set."""
    disconnect = disconnect or asyncio.Event()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    start, chunks = {}, []

    async def receive():
        if messages:
            return messages.pop(0)
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                disconnect.set()

    await app(scope, receive, send)
    if not start:
        return None
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start["headers"]]
    return Response(start["status"], headers, b"".join(chunks))


def multipart(fields, files):
    """A multipart/form-data body and its content type."""
    boundary = "boundary1234"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, content in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="f.txt"'
        parts.append(f"{head}\r\nContent-Type: text/plain\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@contextmanager
def count_hops():
    """Count thread-sensitive `sync_to_async` calls ("hops", each a round trip to the request's
    thread) and thread starts ("threads") while active."""
    counts: Counter[str] = Counter()
    sync_to_async_call, thread_start = SyncToAsync.__call__, threading.Thread.start

    async def counted_call(self, *args, **kwargs):
        if self._thread_sensitive:
            counts["hops"] += 1
        return await sync_to_async_call(self, *args, **kwargs)

    def counted_start(self):
        counts["threads"] += 1
        return thread_start(self)

    # (The ignores: patched for the count, on the classes, as mocks do.)
    SyncToAsync.__call__, threading.Thread.start = counted_call, counted_start  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        SyncToAsync.__call__, threading.Thread.start = sync_to_async_call, thread_start  # type: ignore[method-assign]
