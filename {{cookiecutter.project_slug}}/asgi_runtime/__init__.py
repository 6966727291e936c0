"""
asgi_runtime: how this project is served over ASGI. It comes from the project template, not
from the team: the request handler, its middleware, the probes, the WebSocket limits and origin
check, the start-up and shutdown messages, the system checks, the logging filters, the test
clients, the tasks' worker, development's console email and the environment readers settings.py
uses. The team's code is elsewhere (the project package, the apps); settings.py and asgi.py
configure this package and are the team's to change.

Don't edit these files: fixes and improvements arrive with template updates (`cruft update`,
see README.md), which replace them. To change a behaviour, use the settings it reads, or
subclass and point settings at the subclass. Its own tests are in asgi_runtime/tests.

Parts of it depend on private internals of Django and asgiref, all listed in INTERNALS below.
They were verified with the versions in VERIFIED; with any other installed version the fast
request path turns itself off (Django's own handler and middleware serve instead) and the
`asgi.W010` check says so at start-up.
"""

import re
from importlib.metadata import PackageNotFoundError, version

VERSION = "2026.12.1"

# (lowest, below): the versions the code relying on INTERNALS was run and tested with.
VERIFIED = {"django": ((5, 2), (6, 2)), "asgiref": ((3, 9), (3, 14))}

INTERNALS = {
    "asgiref.sync.SyncToAsync.context_to_thread_executor": (
        "the executor of each ThreadSensitiveContext, made on its first thread-sensitive call "
        "when absent (handler.py gives each request's context its RequestThread)"
    ),
    "django.core.handlers.asgi.ASGIHandler.handle": (
        "reads the body with self.read_body(receive), sends request_started, then calls "
        "self.create_request(scope, body_file), and only then listens for the client's "
        "disconnect with receive() (handler.py)"
    ),
    "django.dispatch.Signal.receivers": (
        "(key, receiver or a weak reference to it, is_async) for each connected receiver, "
        "with the sender's reference before is_async on Django 6.1: "
        "request_started and request_finished run on the loop while they hold only Django's own "
        "(handler.py)"
    ),
    "django.utils.deprecation.MiddlewareMixin.async_mode": "set by its __init__ (middleware.py)",
    "django.utils.deprecation.MiddlewareMixin.__acall__": (
        "where __call__ goes in async mode, and what Sentry's middleware wrapper calls "
        "(middleware.py overrides it)"
    ),
    "django.contrib.sessions.backends.base.SessionBase.modified, .is_empty()": "middleware.py",
    "django.contrib.messages.storage.base.BaseStorage.used, .added_new": "middleware.py",
    "django.middleware.csrf.CsrfViewMiddleware._reject(request, reason)": (
        "where process_view renders the failure view and logs (middleware.py)"
    ),
    "django.core.handlers.base.BaseHandler.load_middleware": (
        "leaves a coroutine-function process_view unwrapped (middleware.py)"
    ),
    "channels' InMemoryChannelLayer.channels, channels_redis' RedisPubSubChannelLayer.channels": (
        "the channels a layer holds in this process (consumers.py, GroupMember)"
    ),
    "asgiref.sync.SyncToAsync.single_thread_executor": (
        "the one thread where thread-sensitive sync_to_async calls run with no async_to_sync "
        "around them, as in pytest-asyncio's tests (testing.py closes its database connections)"
    ),
    "django.http.HttpRequest._dont_enforce_csrf_checks": (
        "set by the test clients, as Django's own do (testing.py)"
    ),
}


def installed_version(package: str) -> tuple[int, ...]:
    try:
        text = version(package)
    except PackageNotFoundError:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def unverified_versions() -> dict[str, str]:
    """The installed packages of VERIFIED outside their range: {name: version}."""
    found = {}
    for package, (lowest, below) in VERIFIED.items():
        installed = installed_version(package)
        if not lowest <= installed < below:
            found[package] = ".".join(map(str, installed)) or "unknown"
    return found
