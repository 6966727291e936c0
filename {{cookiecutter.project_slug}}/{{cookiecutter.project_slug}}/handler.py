"""
Django's ASGI handler, with request threads that are reused and request bodies that are capped.

Django runs each request's sync code (middleware, sync views, ORM calls from async views) in
a thread of its own: `ASGIHandler` enters asgiref's `ThreadSensitiveContext()`, which starts a
one-thread executor on the request's first `sync_to_async` call and, when the request ends,
joins it from yet another new thread. That is two thread starts per request, and Django's
database connections, which belong to a thread, die with it.

Here a request gets the same kind of thread, leased from a bounded pool and given back after
the request, as in a threaded WSGI server: asgiref's own mechanism,
`ThreadSensitiveContext(executor=...)` (asgiref 3.13 or newer), around Django's unchanged
handler.

- One thread per request: all of a request's thread-sensitive sync code runs in one thread,
  which runs nothing else until that work is over.
- A thread is reused only once everything submitted to it has finished. When a client goes
  away mid-request, Django cancels the request's task; the view's sync code finishes in its
  thread, Django's `request_finished` (which closes database connections) runs after it in
  the same thread, then the thread is reused. A thread that never finishes keeps its slot.
- A task that outlives its request and then calls `sync_to_async(thread_sensitive=True)`
  gets RuntimeError ("ThreadSensitiveContext has exited") instead of a new thread.
- At most ASGI_REQUEST_THREADS (settings.py) requests run at once per handler, that is per
  server process; later ones wait, first come first served, once their body has arrived (a
  slow upload holds no thread). A request holds its thread until it ends, even while an async
  view awaits (long polling, server-sent events): count them in.
- Database connections behave as under a threaded WSGI server with that many threads:
  CONN_MAX_AGE keeps at most one per thread, reused by the thread's next requests; Django's
  connection pool lends one to a request until `request_finished`.

A request body larger than REQUEST_MAX_BODY_BYTES (settings.py) is refused with 413 before
Django reads it: at once when the Content-Length header says so, otherwise as soon as the bytes
received pass the limit. Django itself spools a body to a temporary file past
FILE_UPLOAD_MAX_MEMORY_SIZE, so memory stays bounded either way; the cap bounds the disk and the
time a client can tie up, whatever the view would have done with the body.

Relied upon, besides asgiref's documented executor argument: `ASGIHandler.handle` calls
`read_body(receive)` first, with no thread-sensitive call before it (one would raise
RuntimeError, not run elsewhere), and `ASGIHandler.__call__` enters a
`ThreadSensitiveContext()` of its own, a no-op inside this one.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import IO, Any

import django
from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.utils.log import log_response

DEFAULT_THREADS = 32


class RequestThread(ThreadPoolExecutor):
    """A one-thread executor that knows whether its work has drained."""

    def __init__(self, name: str) -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self.last_submission: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self.last_submission = future  # One worker, in order: the last done means all done.
        return future


class RequestThreadPool:
    """A bounded pool of RequestThread, last in first out; used from one event loop."""

    def __init__(self, max_threads: int = DEFAULT_THREADS) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be 1 or more.")
        self.max_threads = max_threads
        self.started = 0
        self.idle: list[RequestThread] = []
        self.waiters: deque[asyncio.Future[RequestThread]] = deque()

    async def acquire(self) -> RequestThread:
        if self.idle:
            return self.idle.pop()  # The most recently used: its connections are warm.
        if self.started < self.max_threads:
            self.started += 1
            return RequestThread(f"asgi-request-{self.started}")
        waiter: asyncio.Future[RequestThread] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # Handed over just as the request was cancelled.
            raise

    def release(self, thread: RequestThread) -> None:
        """Give `thread` back once the work submitted to it has finished."""
        last = thread.last_submission
        if last is not None and not last.done():
            loop = asyncio.get_running_loop()

            def drained(_: Future[Any]) -> None:  # Runs in the request thread.
                try:
                    loop.call_soon_threadsafe(self.release, thread)
                except RuntimeError:
                    pass  # The loop is closed: the server is gone.

            last.add_done_callback(drained)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(thread)
                return
        self.idle.append(thread)

    def shutdown(self) -> None:
        """Stop the idle threads; leased ones run on."""
        while self.idle:
            self.idle.pop().shutdown(wait=True)


class RequestLease(Executor):
    """The executor of one request's context: its pooled thread, once the body is in."""

    thread: RequestThread | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.thread is None:
            raise RuntimeError("No request thread yet: the body is still being received.")
        return self.thread.submit(fn, *args, **kwargs)


lease_var: contextvars.ContextVar[RequestLease] = contextvars.ContextVar("request_lease")


class PooledASGIHandler(ASGIHandler):
    """ASGIHandler whose requests run their sync code in pooled threads."""

    def __init__(self, max_threads: int | None = None) -> None:
        super().__init__()
        if max_threads is None:
            max_threads = getattr(settings, "ASGI_REQUEST_THREADS", DEFAULT_THREADS)
        self.pool = RequestThreadPool(max_threads)
        self.max_body_bytes: int | None = getattr(settings, "REQUEST_MAX_BODY_BYTES", None)

    def load_middleware(self, is_async: bool = False) -> None:
        """Django's, with middleware.py's classes in place of Django's own: settings name
        Django's (so that `check --deploy` and every reader recognise them)."""
        # Imported here: Django's middleware modules import models, so Django must be set up.
        from .middleware import LOOP_DISPATCH

        named = settings.MIDDLEWARE
        settings.MIDDLEWARE = [LOOP_DISPATCH.get(path, path) for path in named]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = named

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # Django refuses it.
        lease = RequestLease()
        token = lease_var.set(lease)
        try:
            async with ThreadSensitiveContext(executor=lease):
                await super().__call__(scope, receive, send)
        finally:
            lease_var.reset(token)
            if lease.thread is not None:
                self.pool.release(lease.thread)

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        limit = self.max_body_bytes
        if limit is None:
            return await super().handle(scope, receive, send)
        if declared_length(scope) > limit:
            return await self.refuse_body(scope, send)
        received = 0

        async def bounded_receive() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                await self.refuse_body(scope, send)
                raise RequestAborted  # Django's handle() then returns without a response.
            return message

        await super().handle(scope, bounded_receive, send)

    async def refuse_body(self, scope: Any, send: Any) -> None:
        response = HttpResponse(
            "Request body too large.\n", status=413, content_type="text/plain; charset=utf-8"
        )
        log_response("Request body too large: %s", scope["path"], response=response)
        await self.send_response(response, send)

    async def read_body(self, receive: Any) -> IO[bytes]:
        body_file: IO[bytes] = await super().read_body(receive)
        try:
            lease_var.get().thread = await self.pool.acquire()
        except BaseException:
            body_file.close()
            raise
        return body_file


def declared_length(scope: Any) -> int:
    """The Content-Length a request declares, 0 without one (or with one the server let by)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def get_asgi_application() -> PooledASGIHandler:
    """Like django.core.asgi.get_asgi_application, with pooled request threads."""
    django.setup(set_prefix=False)
    return PooledASGIHandler()
