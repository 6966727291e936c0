"""
Django's ASGI handler, with request threads that are fresh, bounded and never held idle.

Trust model: every request is as isolated as under Django's own ASGIHandler. Its synchronous
code (sync views and middleware, ORM calls from async views, signal receivers) runs in a thread
that no other request ever used or will use, so thread-local state, the database connections
Django keeps per thread, an open transaction and session state on the connection all die with
the request. The thread is started on the request's first synchronous call, so a request that
runs none (an async view that touches neither the ORM nor the session) takes no thread: Django's
own receivers of request_started and request_finished, which find nothing of such a request's to
reset or close, then run on the loop. With any other receiver connected to either signal they
run in the request's thread, as under Django.

What this handler adds to Django's:

- A bound. At most ASGI_REQUEST_THREADS threads run the application's code at once per server
  process: middleware, views, ORM calls. A thread that waits for its request's client, or for
  an async view, is not running code and does not count, and neither do Django's own signals
  at the start and end of a request (request_started, request_finished), which touch only
  the request's thread. A request whose first such call finds them all busy queues, first come
  first served, behind requests that already had a thread (so that started work finishes
  first). Past ASGI_REQUEST_QUEUE_TIMEOUT seconds in the queue, or with
  ASGI_REQUEST_QUEUE_LENGTH already queued, it gets 503 with Retry-After. A queued request
  whose client has gone away never runs.
- Probes. /healthz and /readyz (health.py) are answered before Django and take no thread, so
  they never wait behind application requests.
- Body bounds. A request body larger than REQUEST_MAX_BODY_BYTES is not read: the request goes
  through the middleware with an empty body to a view that answers 413, so the HTTPS redirect,
  the Host check and the security headers apply to the refusal as to any response. Django
  spools bodies to disk past FILE_UPLOAD_MAX_MEMORY_SIZE; the cap bounds that disk and the time
  a client can tie up. So does REQUEST_BODIES_MAX_BYTES for all the bodies a process holds at
  once (in memory and spooled): the body that would pass it is refused the same way with 503
  and Retry-After, and one that finds the temporary directory full with 507. A body is dropped
  (its spooled file deleted) as soon as its client leaves, and counts until its request ends.

A task that a request starts and leaves running gets a thread of its own for its synchronous
calls once the request has ended, as under Django (asgiref makes one per context).

Relies on internals of asgiref and Django, listed in asgi_runtime.INTERNALS: asgiref's registry
of each ThreadSensitiveContext's executor, so that a request's calls go to its RequestThread while
Django's handler runs unchanged, and the order in which ASGIHandler.handle calls its methods.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import IO, Any

import django
from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import reset_urlconf
from django.core.signals import setting_changed
from django.db import close_old_connections, reset_queries
from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from django.utils.log import log_response
from django.views.decorators.csrf import csrf_exempt

from . import health, unverified_versions

logger = logging.getLogger("django.request")

# Set in a scope by testing.py's clients only (no server sends it): the request is then marked
# as Django's test clients mark theirs, so that CSRF checks are skipped unless they enforce them.
SKIP_CSRF_CHECKS = "asgi_runtime.test_client.skip_csrf_checks"
ASGI_REQUEST_THREADS = 64
ASGI_REQUEST_QUEUE_LENGTH = 1000
ASGI_REQUEST_QUEUE_TIMEOUT = 10.0
REQUEST_BODIES_MAX_BYTES = 256 * 1024 * 1024
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]


# The receivers Django itself connects to the signals sent around every request.
DJANGOS_OWN_RECEIVERS: dict[Signal, set[Callable[..., Any]]] = {
    signals.request_started: {reset_queries, close_old_connections},
    signals.request_finished: {close_old_connections, reset_urlconf, close_caches},
}


def only_djangos_receivers() -> bool:
    """Whether request_started and request_finished reach only Django's own receivers."""
    for signal, own in DJANGOS_OWN_RECEIVERS.items():
        # (key, receiver, is_async) on Django 5.2, (key, receiver, sender, is_async) on 6.1.
        for entry in signal.receivers:
            receiver = entry[1]
            if isinstance(receiver, weakref.ReferenceType):
                receiver = receiver()
            if receiver is not None and receiver not in own:
                return False
    return True


def run_here(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
    """Call fn in this thread, as an executor would in its own."""
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as error:
        future.set_exception(error)
    return future


class ThreadBudget:
    """How many request threads may run code at once, and who waits for the next to finish.

    Thread-safe: threads finish work and give their slot back from their own thread.
    """

    def __init__(self, size: int, queue_length: int) -> None:
        if size < 1:
            raise ValueError("ASGI_REQUEST_THREADS must be 1 or more.")
        self.size = size
        self.queue_length = queue_length
        self.running = 0
        self.started: deque[Callable[[], None]] = deque()  # requests past their first call
        self.arriving: deque[Callable[[], None]] = deque()  # requests waiting for their first
        self.lock = threading.Lock()

    def acquire(self, grant: Callable[[], None], first: bool) -> bool | None:
        """True: a slot is yours now. None: `grant()` is called when one is. False: refused."""
        with self.lock:
            if self.running < self.size and not self.started and not self.arriving:
                self.running += 1
                return True
            if not first:
                self.started.append(grant)
                return None
            if len(self.arriving) >= self.queue_length:
                return False
            self.arriving.append(grant)
            return None

    def withdraw(self, grant: Callable[[], None]) -> bool:
        """Leave the queue; False if the slot was already granted."""
        with self.lock:
            for queue in (self.started, self.arriving):
                if grant in queue:
                    queue.remove(grant)
                    return True
            return False

    def release(self) -> None:
        with self.lock:
            queue = self.started or self.arriving
            if not queue:
                self.running -= 1
                return
            grant = queue.popleft()  # The slot passes on: `running` stays the same.
        grant()

    @property
    def queued(self) -> int:
        return len(self.started) + len(self.arriving)


Call = tuple[Future[Any], Callable[[], Any]]


class RequestThread(Executor):
    """The executor of one request: a thread of its own, started on the first call and used for
    that request only, run within the process's ThreadBudget.

    Calls come from the request's event loop; completions from the thread, under the lock.
    """

    def __init__(
        self, budget: ThreadBudget, loop: asyncio.AbstractEventLoop, receiver: Receiver
    ) -> None:
        self.budget = budget
        self.loop = loop
        self.receiver = receiver
        self.executor: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()
        self.outstanding = 0  # Calls handed to the thread and not finished.
        self.holds_slot = False
        self.waiting = False
        self.backlog: deque[Call] = deque()
        self.dropped: list[Call] = []  # Calls waiting when the client left: never run.
        # Django's own bookkeeping runs outside the budget: request_started before the request
        # is created, response.close() (request_finished) once the response is sent.
        self.bookkeeping = True
        # Until the thread starts, bookkeeping that calls only Django's own receivers runs here.
        self.bookkeeping_here = only_djangos_receivers()
        self.deadline: asyncio.TimerHandle | None = None
        self.refused = False  # The queue gave up on this request: its calls bypass the budget.
        # Has held a slot: waits ahead of newer requests from then on, with no deadline.
        self.admitted = False
        self.closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.bookkeeping and self.bookkeeping_here and self.executor is None:
            return run_here(fn, *args, **kwargs)
        outer: Future[Any] = Future()
        with self.lock:
            self.backlog.append((outer, lambda: fn(*args, **kwargs)))
            if self.holds_slot or self.refused or self.bookkeeping:
                ready = self.take_backlog()
            elif self.waiting:
                return outer
            else:
                ready = None
                self.waiting = True
                first = not self.admitted
        if ready is not None:
            self.dispatch(ready)
            return outer
        granted = self.budget.acquire(self.granted_from_any_thread, first)
        if granted:
            self.granted()
        elif granted is False:
            self.give_up()
        elif first:
            timeout = getattr(settings, "ASGI_REQUEST_QUEUE_TIMEOUT", ASGI_REQUEST_QUEUE_TIMEOUT)
            self.deadline = self.loop.call_later(timeout, self.expire)
        return outer

    def granted_from_any_thread(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.granted)
        except RuntimeError:  # The loop is closed: the server is gone.
            self.budget.release()

    def granted(self) -> None:
        """The request may run code in its thread now (on the loop)."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        with self.lock:
            wanted = self.waiting and not self.closed
            self.waiting = False
        if not wanted or self.receiver.gone():
            # Ended, or its client left while it queued: it never runs, the slot passes on.
            self.budget.release()
            if wanted:
                self.abandon()
            return
        with self.lock:
            self.admitted = True
            ready = self.take_backlog()
            idle = self.outstanding == 0
            self.holds_slot = not idle
        if idle:  # Every call was cancelled while it waited.
            self.budget.release()
        self.dispatch(ready)

    def abandon(self) -> None:
        """The client left: the calls that wait never run. What it runs next is clean-up,
        outside the budget; a place in the queue is given up at once. The calls are dropped,
        not cancelled: Django cancels the request's task, and with it the calls it waits for,
        once it has seen the disconnect (a task that ended cancelled before that would reach
        the server as an error); shutdown() cancels whatever is left."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        with self.lock:
            self.bookkeeping = True
            waiting, self.waiting = self.waiting, False
            self.dropped.extend(self.backlog)
            self.backlog.clear()
        if waiting:
            self.budget.withdraw(self.granted_from_any_thread)  # Or granted() gives it back.

    def take_backlog(self) -> list[Call]:
        """The waiting calls that were not cancelled meanwhile (with the lock held)."""
        ready = [call for call in self.backlog if call[0].set_running_or_notify_cancel()]
        self.backlog.clear()
        self.outstanding += len(ready)
        return ready

    def dispatch(self, ready: list[Call]) -> None:
        if not ready:
            return
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asgi-request")
        for outer, call in ready:
            inner = self.executor.submit(call)
            inner.add_done_callback(functools.partial(self.finished, outer=outer))

    def finished(self, inner: Future[Any], outer: Future[Any]) -> None:
        """In the request's thread, when a call has returned."""
        with self.lock:
            self.outstanding -= 1
            release = self.outstanding == 0 and self.holds_slot
            if release:
                self.holds_slot = False
        if release:
            self.budget.release()
        error = inner.exception()
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(inner.result())

    def expire(self) -> None:
        """ASGI_REQUEST_QUEUE_TIMEOUT passed before the request's first call could run."""
        self.deadline = None
        if self.budget.withdraw(self.granted_from_any_thread):
            self.give_up()

    def give_up(self) -> None:
        with self.lock:
            self.waiting = False
            self.refused = True
        # Django's disconnect handling cancels the request's task, and so the calls that wait;
        # its clean-up calls then run outside the budget (refused), and handler.py answers 503.
        self.receiver.stop_request()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.closed = True
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.waiting:
            self.budget.withdraw(self.granted_from_any_thread)
        for outer, _ in self.dropped:
            outer.cancel()
        if self.executor is not None:
            # The thread ends once its last call has returned; nothing waits for it.
            self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)


class Receiver:
    """The request's `receive`. Once the body is in, the next message can only be the client's
    disconnect, which Django listens for while the request runs: this tells whether it came
    (a request queued for a thread then never runs), and can stop the request itself (a
    disconnect for Django's listener, which then cancels the request's task)."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.on_disconnect: Callable[[], None] = lambda: None
        self.body_read = False
        self.body_left_unread = False
        self.pending: asyncio.Future[Mapping[str, Any]] | None = None
        self.stop: asyncio.Future[None] | None = None
        self.closed = False

    async def __call__(self) -> Mapping[str, Any]:
        if not self.body_read:
            return await self.receive()
        if self.stop is None:
            self.stop = asyncio.get_running_loop().create_future()
        if self.body_left_unread:
            # Receiving would read the refused body: the response is sent without listening.
            await self.stop
            return {"type": "http.disconnect"}
        self.watch()
        assert self.pending is not None
        await asyncio.wait((self.pending, self.stop), return_when=asyncio.FIRST_COMPLETED)
        if self.closed:
            # The request was cancelled (a stopping server) as its client left: Django's
            # listener, whose handler is gone, would end with a RequestAborted no one collects.
            raise asyncio.CancelledError
        message = {"type": "http.disconnect"} if self.stop.done() else self.pending.result()
        if message["type"] == "http.disconnect":
            self.on_disconnect()
        return message

    def watch(self) -> None:
        if self.pending is None and not self.body_left_unread:
            self.pending = asyncio.ensure_future(self.receive())

    def gone(self) -> bool:
        pending = self.pending
        return (
            pending is not None
            and pending.done()
            and not pending.cancelled()
            and pending.exception() is None
            and pending.result().get("type") == "http.disconnect"
        )

    def stop_request(self) -> None:
        if self.stop is None:
            self.stop = asyncio.get_running_loop().create_future()
        if not self.stop.done():
            self.stop.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()


# Why a body was refused, by status.
BODY_REFUSALS = {
    413: "Request body too large.\n",
    503: "Too many request bodies being received at once: try again shortly.\n",
    507: "No room left to store the request body.\n",
}


@csrf_exempt
def body_refused(request: HttpRequest) -> HttpResponse:
    status = current.get().body_refused
    response = HttpResponse(BODY_REFUSALS[status], status=status)
    response["Content-Type"] = "text/plain; charset=utf-8"
    if status == 503:
        response["Retry-After"] = "5"
    return response


# The URLconf of a request whose body was refused (request.urlconf = this module).
urlpatterns = [re_path(r"", body_refused)]


class Request:
    """What the handler knows of the request being handled."""

    def __init__(self, scope: Any, thread: RequestThread, receiver: Receiver) -> None:
        self.scope = scope
        self.thread = thread
        self.receiver = receiver
        self.body_refused = 0  # or the status of the refusal (BODY_REFUSALS)
        self.body_bytes = 0
        self.response_started = False


current: contextvars.ContextVar[Request] = contextvars.ContextVar("asgi_runtime_request")


class FastASGIHandler(ASGIHandler):
    """ASGIHandler with fresh request threads in a budget, probes first and a body cap."""

    def __init__(self) -> None:
        super().__init__()
        self.configure()
        # Tests change settings (override_settings, pytest-django's `settings`): the handler
        # then follows, as Django's test clients, which build theirs for every client, do.
        self.settings_changed = False
        setting_changed.connect(self.on_setting_changed)

    def configure(self) -> None:
        self.budget = ThreadBudget(
            getattr(settings, "ASGI_REQUEST_THREADS", ASGI_REQUEST_THREADS),
            getattr(settings, "ASGI_REQUEST_QUEUE_LENGTH", ASGI_REQUEST_QUEUE_LENGTH),
        )
        self.max_body_bytes: int | None = getattr(settings, "REQUEST_MAX_BODY_BYTES", None)
        self.max_bodies_bytes: int = getattr(
            settings, "REQUEST_BODIES_MAX_BYTES", REQUEST_BODIES_MAX_BYTES
        )
        self.bodies_bytes = 0  # held by the requests being handled (on the event loop only)

    def on_setting_changed(self, **kwargs: Any) -> None:
        self.settings_changed = True

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

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # Closing before accepting refuses the handshake with HTTP 403, where Django would
            # raise "Django can only handle ASGI/HTTP connections".
            await receive()
            return await send({"type": "websocket.close"})
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # Django refuses it.
        if self.settings_changed:
            self.settings_changed = False
            self.load_middleware(is_async=True)
            self.configure()
        if scope["path"] in health.PROBES:
            return await health.PROBES[scope["path"]](scope, receive, send)
        receiver = Receiver(receive)
        thread = RequestThread(self.budget, asyncio.get_running_loop(), receiver)
        receiver.on_disconnect = thread.abandon
        request = Request(scope, thread, receiver)

        async def tracking_send(message: Mapping[str, Any]) -> None:
            request.response_started = True
            if message["type"] == "http.response.body" and not message.get("more_body"):
                thread.bookkeeping = True  # Sent: what Django runs now is its clean-up.
            await send(message)

        token = current.set(request)
        context = ThreadSensitiveContext()
        try:
            async with context:
                # Django's own ThreadSensitiveContext is a no-op inside this one: the request's
                # thread-sensitive calls go to its RequestThread.
                SyncToAsync.context_to_thread_executor[context] = thread
                try:
                    await super().__call__(scope, receiver, tracking_send)
                finally:
                    # Taken out before the context exits, which would join the thread.
                    SyncToAsync.context_to_thread_executor.pop(context, None)
        except RequestAborted:
            pass
        finally:
            self.bodies_bytes -= request.body_bytes
            current.reset(token)
            thread.shutdown(wait=False)
            receiver.close()
        if thread.refused and not request.response_started and not receiver.gone():
            await self.send_busy(scope, send)

    async def send_busy(self, scope: Any, send: Send) -> None:
        timeout = getattr(settings, "ASGI_REQUEST_QUEUE_TIMEOUT", ASGI_REQUEST_QUEUE_TIMEOUT)
        response = HttpResponse(
            "Too many requests at once: try again shortly.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
            headers={"Retry-After": str(max(1, round(timeout)))},
        )
        log_response(
            "Service busy (%s request threads running, %s queued): %s",
            self.budget.size,
            self.budget.queued,
            scope["path"],
            response=response,
            level="warning",
        )
        await self.send_response(response, send)

    async def read_body(self, receive: Any) -> IO[bytes]:
        """Django's, within REQUEST_MAX_BODY_BYTES, REQUEST_BODIES_MAX_BYTES and the room left
        on disk: a body past them is left unread, and its request gets an empty one."""
        request = current.get(None)
        if request is None:
            return await super().read_body(receive)
        body_file = await self.read_bounded_body(receive, request)
        request.receiver.body_read = True
        request.receiver.body_left_unread = bool(request.body_refused)
        return body_file

    async def read_bounded_body(self, receive: Any, request: Request) -> IO[bytes]:
        limit = self.max_body_bytes
        if limit is not None and declared_length(request.scope) > limit:
            request.body_refused = 413
            return await super().read_body(empty_body)

        async def bounded() -> dict[str, Any]:
            if request.body_refused:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            size = len(message.get("body", b""))
            if limit is not None and request.body_bytes + size > limit:
                request.body_refused = 413
            elif self.bodies_bytes + size > self.max_bodies_bytes:
                request.body_refused = 503
            if request.body_refused:
                return {"type": "http.request", "body": b"", "more_body": False}
            request.body_bytes += size
            self.bodies_bytes += size
            return message

        body_file: IO[bytes] | None = None
        try:
            body_file = await super().read_body(bounded)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The disk is full. Django's spooled file goes with the exception: closed, deleted.
            request.body_refused = 507
        if body_file is None or request.body_refused:
            if body_file is not None:
                body_file.close()
            return await super().read_body(empty_body)
        return body_file

    def create_request(self, scope: Any, body_file: IO[bytes]) -> Any:
        http_request, error_response = super().create_request(scope, body_file)
        request = current.get(None)
        if request is not None:
            request.thread.bookkeeping = False
            if http_request is not None and request.body_refused:
                # Through the middleware, to a view that answers 413 (see the docstring).
                http_request.urlconf = __name__
        if http_request is not None and scope.get(SKIP_CSRF_CHECKS):
            # As Django's test clients do (a private attribute: not in Django's stubs).
            http_request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        return http_request, error_response


async def empty_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def declared_length(scope: Any) -> int:
    """The Content-Length a request declares, 0 without one (or with one the server let by)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class DjangoASGIHandler(ASGIHandler):
    """Django's own handler and middleware, with the probes and the WebSocket refusal of
    FastASGIHandler: what serves when the installed Django or asgiref was not verified."""

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            return await send({"type": "websocket.close"})
        if scope["type"] == "http" and scope["path"] in health.PROBES:
            return await health.PROBES[scope["path"]](scope, receive, send)
        await super().__call__(scope, receive, send)


def get_asgi_application() -> ASGIHandler:
    """Like django.core.asgi.get_asgi_application, with this module's handler; Django's own
    where the installed versions are not the verified ones (asgi_runtime.VERIFIED)."""
    django.setup(set_prefix=False)
    if unverified_versions():
        return DjangoASGIHandler()  # The asgi.W010 check says why.
    return FastASGIHandler()
