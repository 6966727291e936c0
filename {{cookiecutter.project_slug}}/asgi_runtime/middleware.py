"""
Django's default middleware and the Content Security Policy middleware (Django's own on Django
6, django-csp's on Django 5.2), with the hooks that do no I/O run on the event loop.

Under ASGI, Django calls each `process_request` and `process_response` of its middleware
through `sync_to_async(thread_sensitive=True)`, and wraps CSRF's `process_view` in one more:
13 round trips to the request's thread per request with the default MIDDLEWARE, almost all
around code that reads headers and sets attributes.

Each class here subclasses Django's own (or django-csp's) and changes only where its hooks
run. The hooks are the original ones, called unmodified: on the event loop when the branch about
to run does no I/O, otherwise in the request's thread, exactly as Django would:

- SessionMiddleware.process_response, when Django will save the session. Loading a session is
  lazy: it happens where the view first uses it, never in these hooks.
- MessageMiddleware.process_response, when messages were read or added.
- CsrfViewMiddleware: every hook with CSRF_USE_SESSIONS; `process_view` when `request.POST`
  may be parsed from a body that is multipart, larger than LOOP_PARSE_MAX_BYTES (64 KiB: parsing
  is CPU work that would hold up every other request of the process) or of unknown size; the
  failure view and its logging.
- SecurityMiddleware, ContentSecurityPolicyMiddleware (Django 6's, or django-csp's 4.x
  CSPMiddleware on Django 5.2: both install a lazy nonce, and build the header from settings),
  CommonMiddleware, AuthenticationMiddleware (it installs a lazy `request.user` and
  `request.auser`) and XFrameOptionsMiddleware: never.

Trust model: only the classes of this module, and subclasses that say so, run hooks on the
loop. A subclass (the project's own) behaves exactly as the same subclass of Django's class
would: its overrides are called wherever Django would call them. Without
`run_hooks_on_loop = True` in its class body (the flag is not inherited) it gets Django's
dispatch, every hook in a thread. With it, its hooks are called on the loop on the branches kept
there, a promise that its code does no I/O on them; a CsrfViewMiddleware subclass that overrides
`_reject` (a failure page of its own) has `process_view` called in a thread. Sessions and
messages stay on the loop only with Django's built-in engines and storages; any other gets
Django's dispatch. A body's size is taken from Content-Length, which the server enforced while
framing the body; without one, the body may be large. Were a branch misjudged, database access
on the loop would raise SynchronousOnlyOperation (keep DJANGO_ALLOW_ASYNC_UNSAFE unset). Under
WSGI and with Django's sync test Client (`async_mode` false), nothing changes. See
tests/test_fast_path.py.

Undocumented Django internals relied upon:
- `MiddlewareMixin.async_mode`, set by `MiddlewareMixin.__init__`.
- `SessionBase.modified` and `SessionBase.is_empty()`.
- `BaseStorage.used` and `BaseStorage.added_new` (messages).
- `CsrfViewMiddleware._reject(request, reason)`: where `process_view` renders the failure
  view and logs, its result returned as is.
- `BaseHandler.load_middleware` leaving a coroutine-function `process_view` unwrapped.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable
from typing import Any, cast

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.messages.storage.session import SessionStorage
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponseBase
from django.middleware import clickjacking, common, csrf, security
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

from . import installed_version

# The Content Security Policy middleware that settings.py names: Django's own, or on Django
# 5.2, which has none, django-csp's (none if it is not installed).
POLICY_MIDDLEWARE: tuple[type[MiddlewareMixin], ...]
if django.VERSION >= (6, 0):
    from django.middleware.csp import ContentSecurityPolicyMiddleware as Policy

    POLICY_MIDDLEWARE = (Policy,)
else:
    try:
        from csp.middleware import CSPMiddleware as Policy  # type: ignore[no-redef]
    except ImportError:
        POLICY_MIDDLEWARE = ()
    else:
        POLICY_MIDDLEWARE = (Policy,)

SESSION_ENGINES = frozenset(
    f"django.contrib.sessions.backends.{name}"
    for name in ("db", "cache", "cached_db", "file", "signed_cookies")
)
MESSAGE_STORAGES = (FallbackStorage, CookieStorage, SessionStorage)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
# Form bodies up to this size are parsed on the event loop; larger ones in the request's thread.
LOOP_PARSE_MAX_BYTES = 64 * 1024


async def call(in_thread: bool, hook: Callable[..., Any], *args: Any) -> Any:
    """Call `hook` on the loop, or in the request's thread as Django would."""
    if in_thread:
        return await sync_to_async(hook, thread_sensitive=True)(*args)
    return hook(*args)


class LoopDispatch(MiddlewareMixin):
    """MiddlewareMixin.__acall__, with each hook on the loop unless it is about to do I/O.

    Mixed in before Django's class. Subclasses say which branches need a thread.
    """

    run_hooks_on_loop = True

    def __init__(self, get_response: Callable[..., Any]) -> None:
        super().__init__(get_response)
        self.hooks_on_loop: bool = (
            self.async_mode
            and vars(type(self)).get("run_hooks_on_loop") is True
            and self.settings_allow_loop()
        )

    def settings_allow_loop(self) -> bool:
        return True

    def request_in_thread(self, request: HttpRequest) -> bool:
        return False

    def response_in_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # Where Django's __call__ goes in async mode, and what wrappers of middleware that
        # call it directly (Sentry's, with SENTRY_DSN) go to.
        if self.hooks_on_loop:
            return await self.acall_on_loop(request)
        return await super().__acall__(request)

    async def acall_on_loop(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        if hasattr(self, "process_request"):
            response = await call(self.request_in_thread(request), self.process_request, request)
        response = response or await cast(Awaitable[Any], self.get_response(request))
        if hasattr(self, "process_response"):
            in_thread = self.response_in_thread(request, response)
            response = await call(in_thread, self.process_response, request, response)
        return cast(HttpResponseBase, response)


class SecurityMiddleware(LoopDispatch, security.SecurityMiddleware):
    run_hooks_on_loop = True


# Without django-csp on Django 5.2, it subclasses nothing to load in place of.
class ContentSecurityPolicyMiddleware(LoopDispatch, *POLICY_MIDDLEWARE):  # type: ignore[misc]
    run_hooks_on_loop = True

    def settings_allow_loop(self) -> bool:
        # Django's hooks are covered by VERIFIED; django-csp's were read for its 4.x releases,
        # and any other gets Django's dispatch.
        return django.VERSION >= (6, 0) or installed_version("django-csp")[:1] == (4,)


class CommonMiddleware(LoopDispatch, common.CommonMiddleware):
    run_hooks_on_loop = True


class AuthenticationMiddleware(LoopDispatch, auth.AuthenticationMiddleware):
    run_hooks_on_loop = True


class XFrameOptionsMiddleware(LoopDispatch, clickjacking.XFrameOptionsMiddleware):
    run_hooks_on_loop = True


class SessionMiddleware(LoopDispatch, sessions.SessionMiddleware):
    run_hooks_on_loop = True

    def settings_allow_loop(self) -> bool:
        return settings.SESSION_ENGINE in SESSION_ENGINES

    def response_in_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        if session is None:
            return False  # Django returns the response untouched.
        if type(session) is not self.SessionStore:
            return True  # Replaced by other code: don't guess.
        # The only branch on which Django loads the session's expiry and saves it.
        return (session.modified or settings.SESSION_SAVE_EVERY_REQUEST) and not session.is_empty()


class MessageMiddleware(LoopDispatch, messages.MessageMiddleware):
    run_hooks_on_loop = True

    def settings_allow_loop(self) -> bool:
        return import_string(settings.MESSAGE_STORAGE) in MESSAGE_STORAGES

    def response_in_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        storage = getattr(request, "_messages", None)
        if storage is None:
            return False  # Django returns the response untouched.
        if type(storage) not in MESSAGE_STORAGES:
            return True
        # BaseStorage.update() touches the session or cookie only if either is set.
        return bool(storage.used or storage.added_new)


class RejectInThread(Exception):
    """Raised on the loop by CsrfViewMiddleware._reject: render the failure view in a thread."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class CsrfViewMiddleware(LoopDispatch, csrf.CsrfViewMiddleware):
    run_hooks_on_loop = True

    def __init__(self, get_response: Callable[..., Any]) -> None:
        super().__init__(get_response)
        if self.hooks_on_loop:
            # The class's process_view: Django's, or a subclass's override of it.
            self.sync_process_view = types.MethodType(type(self).process_view, self)
            # load_middleware wraps a sync process_view in sync_to_async, a coroutine function
            # it leaves alone. On the instance: under WSGI, Django's own stays.
            self.process_view = self.aprocess_view  # type: ignore[assignment,method-assign]
        # A failure page of the subclass's own may do anything: process_view goes to a thread.
        self.own_reject = type(self)._reject is not CsrfViewMiddleware._reject

    def request_in_thread(self, request: HttpRequest) -> bool:
        return bool(settings.CSRF_USE_SESSIONS)

    def response_in_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return bool(settings.CSRF_USE_SESSIONS)

    def view_in_thread(self, request: HttpRequest) -> bool:
        if settings.CSRF_USE_SESSIONS or self.own_reject:
            return True
        if request.method in SAFE_METHODS:
            return False  # Accepted before the body is looked at.
        # Otherwise request.POST may be read: on the loop only if it is small, in memory and
        # not multipart (whose parser runs the upload handlers).
        if (request.content_type or "").startswith("multipart/"):
            return True
        try:
            length = int(request.META.get("CONTENT_LENGTH") or "")
        except ValueError:
            return True
        return not 0 <= length <= min(LOOP_PARSE_MAX_BYTES, settings.FILE_UPLOAD_MAX_MEMORY_SIZE)

    async def aprocess_view(
        self,
        request: HttpRequest,
        callback: Callable[..., Any],
        callback_args: tuple[Any, ...],
        callback_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        args = (request, callback, callback_args, callback_kwargs)
        if self.view_in_thread(request):
            return cast(HttpResponseBase | None, await call(True, self.sync_process_view, *args))
        try:
            return self.sync_process_view(*args)
        except RejectInThread as reject:
            # Django's failure view and its logging may do I/O (templates, log handlers).
            reject_in_thread = super()._reject  # type: ignore[misc]
            response = await call(True, reject_in_thread, request, reject.reason)
            return cast(HttpResponseBase, response)

    def _reject(self, request: HttpRequest, reason: str) -> HttpResponseBase:
        if self.hooks_on_loop and on_event_loop():
            raise RejectInThread(reason)
        return cast(HttpResponseBase, super()._reject(request, reason))  # type: ignore[misc]


# Django's classes, by the dotted path MIDDLEWARE names them with, and the subclass of this
# module that handler.py loads in their place.
LOOP_DISPATCH = {
    f"{django_class.__module__}.{django_class.__qualname__}": f"{__name__}.{cls.__qualname__}"
    for cls in (
        SecurityMiddleware,
        ContentSecurityPolicyMiddleware,
        SessionMiddleware,
        CommonMiddleware,
        CsrfViewMiddleware,
        AuthenticationMiddleware,
        MessageMiddleware,
        XFrameOptionsMiddleware,
    )
    for django_class in cls.__bases__[1:]
}
