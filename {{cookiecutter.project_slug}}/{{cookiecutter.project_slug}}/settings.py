{%- set slug = cookiecutter.project_slug -%}
{%- set redis = cookiecutter.channel_layer == "redis" -%}
"""
Django settings.

Every value that differs between machines comes from the environment (12-factor), parsed by
django-environ. In development a local `.env` file fills in what the environment does not
set; production sets real environment variables and ships no `.env` (or sets
DJANGO_READ_DOT_ENV=false). `.env.example` lists every variable.

https://docs.djangoproject.com/en/stable/topics/settings/
https://docs.djangoproject.com/en/stable/ref/settings/
"""

from pathlib import Path

import django

from asgi_runtime.environment import (
    env,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_url,
    required,
    stop,
)
{%- if redis %}
from asgi_runtime.sentinel import SentinelPool, redis_connection_options
{%- endif %}

BASE_DIR = Path(__file__).resolve().parent.parent

if env_bool("DJANGO_READ_DOT_ENV", default=True) and (BASE_DIR / ".env").is_file():
    # Values already in the environment win over the file.
    env.read_env(BASE_DIR / ".env")


# The Content Security Policy (SECURE_CSP, under "Security") is sent by Django's own middleware
# on Django 6, and by django-csp's on Django 5.2, which has none: both read the same directives,
# written with the same constants (CSP.SELF, CSP.NONCE, ...), and give templates the nonce as
# csp_nonce.
if django.VERSION >= (6, 0):
    from django.utils.csp import CSP

    _csp_middleware = "django.middleware.csp.ContentSecurityPolicyMiddleware"
    _csp_context_processor = "django.template.context_processors.csp"
else:
    try:
        from csp import constants as CSP  # type: ignore[no-redef]  # Django 6's, for mypy.
    except ImportError:
        stop(
            "Django 5.2 sends the Content-Security-Policy header with django-csp, which is not"
            " installed: add django-csp>=4.0 to the dependencies, or move to Django 6."
        )

    _csp_middleware = "csp.middleware.CSPMiddleware"
    _csp_context_processor = "{{ slug }}.context_processors.csp_nonce"


# Debug mode: only ever on in development, never in production.
# https://docs.djangoproject.com/en/stable/ref/settings/#debug

DEBUG = env_bool("DJANGO_DEBUG", default=False)

# Secret key and hosts: required in production. Development gets a fixed, openly insecure key
# so that sessions survive auto-reloads.
# https://docs.djangoproject.com/en/stable/ref/settings/#secret-key

if DEBUG:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or "django-insecure-development-only"
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
else:
    SECRET_KEY = required("DJANGO_SECRET_KEY", env.str("DJANGO_SECRET_KEY", default=""))
    ALLOWED_HOSTS = required("DJANGO_ALLOWED_HOSTS", env.list("DJANGO_ALLOWED_HOSTS", default=[]))
# Former secret keys, still accepted while what they signed or encrypted expires (sessions,
# password-reset links, email waiting for the worker): README.md, "Configuration".
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])

CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])


# Applications and middleware
# https://docs.djangoproject.com/en/stable/ref/settings/#installed-apps

INSTALLED_APPS = [
    # How the project is served (the template's, not yours to edit): its system checks, and a
    # runserver that runs the ASGI server of Procfile (listed before staticfiles, whose
    # runserver it replaces).
    "asgi_runtime",
    # The project itself: its templates.
    "{{ slug }}",
    "users",
{%- if cookiecutter.websockets %}
    "rooms",
{%- endif %}
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # ServeStatic's configuration checks.
    "servestatic",
    "django.contrib.staticfiles",
{%- if cookiecutter.websockets %}
    "channels",
{%- endif %}
    # Accounts: sign-up, login, email verification, password reset and change, rate limits;
    # two-factor authentication and passkeys (after "users", whose templates override allauth's).
    "allauth",
    "allauth.account",
    "allauth.mfa",
    # Background tasks (README.md, "Background tasks"): the database backend, its worker
    # (`manage.py tasks_worker`) and its admin pages. Django 5.2 has the framework from the
    # django-tasks backport.
    "django_tasks_db",
    *(["django_tasks"] if django.VERSION < (6, 0) else []),
]

MIDDLEWARE = [
    # Django's defaults. Served over ASGI, asgi_runtime/handler.py loads the subclasses of
    # asgi_runtime/middleware.py in their place, which run the hooks that do no I/O on the
    # event loop.
    "django.middleware.security.SecurityMiddleware",
    # The Content-Security-Policy header, and the nonce of each page (SECURE_CSP, below).
    _csp_middleware,
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-allauth's: the request it serves, and its redirects (re-authentication, /accounts/).
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "{{ slug }}.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # csp_nonce: the nonce of the page's own inline scripts and styles.
                _csp_context_processor,
            ],
        },
    },
]

# There is no WSGI application: this project is served over ASGI only (see README.md).
ASGI_APPLICATION = "{{ slug }}.asgi.application"
# Each request runs its synchronous code in a thread of its own, started when first needed and
# gone with the request, as under Django's own handler (asgi_runtime/handler.py). At most this many run code
# at once per server process; a request that finds them all busy waits, at most
# ASGI_REQUEST_QUEUE_TIMEOUT seconds and behind at most ASGI_REQUEST_QUEUE_LENGTH others, then
# gets 503 with Retry-After. Requests waiting on a client or in async code don't count.
ASGI_REQUEST_THREADS = env_int("ASGI_REQUEST_THREADS", default=64, minimum=1)
ASGI_REQUEST_QUEUE_TIMEOUT = env_float("ASGI_REQUEST_QUEUE_TIMEOUT", default=10.0)
ASGI_REQUEST_QUEUE_LENGTH = env_int("ASGI_REQUEST_QUEUE_LENGTH", default=1000)
# Larger request bodies, uploads included, are refused with 413 before Django reads them
# (asgi_runtime/handler.py); Django's DATA_UPLOAD_MAX_MEMORY_SIZE still limits form fields within it.
REQUEST_MAX_BODY_BYTES = env_int("REQUEST_MAX_BODY_BYTES", default=10 * 1024 * 1024)
# All the request bodies a server process holds at once, in memory and spooled to disk: the
# body that would pass it gets 503 with Retry-After (and one that finds the disk full, 507).
REQUEST_BODIES_MAX_BYTES = env_int("REQUEST_BODIES_MAX_BYTES", default=256 * 1024 * 1024)


# Users: a model of the project's own from the start, as Django recommends, since changing
# AUTH_USER_MODEL after the first migration is hard.
# https://docs.djangoproject.com/en/stable/topics/auth/customizing/

AUTH_USER_MODEL = "users.User"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
AUTHENTICATION_BACKENDS = [
    # Django's: by username, for Django's own admin login form (DJANGO_ADMIN_FORCE_ALLAUTH off).
    "django.contrib.auth.backends.ModelBackend",
    # The site's login, by username or email address.
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Accounts, by django-allauth: sign-up asks for an email address (unique, whatever its case), a
# username and a password; login takes the username or the address. Email verification is
# "mandatory" in production (no login before the link from the email is followed), "optional"
# in development; ACCOUNT_EMAIL_VERIFICATION (mandatory, optional or none) changes it.
# https://docs.allauth.org/en/latest/account/configuration.html

ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env_choice(
    "ACCOUNT_EMAIL_VERIFICATION",
    default="optional" if DEBUG else "mandatory",
    choices=["mandatory", "optional", "none"],
)
ACCOUNT_ADAPTER = "users.adapter.AccountAdapter"
# The admin's login page (/admin/login/) sends staff to the site's login (urls.py), which counts
# failed attempts, verifies email addresses and asks for the second factor: Django's own form
# does none of this. On in development too, so that staff sign in there as in production
# (development's optional verification lets an admin made by createsuperuser straight in).
# False brings back Django's form, unlimited.
# https://docs.allauth.org/en/latest/common/admin.html
DJANGO_ADMIN_FORCE_ALLAUTH = env_bool("DJANGO_ADMIN_FORCE_ALLAUTH", default=True)
# Two-factor authentication, set up from the account page (/accounts/2fa/): an authenticator
# app's codes (TOTP) with recovery codes, and passkeys (WebAuthn), which also sign in on their
# own from the login page. WebAuthn needs HTTPS, or http://localhost in development.
# https://docs.allauth.org/en/latest/mfa/configuration.html
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_PASSKEY_LOGIN_ENABLED = True
# Attempts allowed: "amount/period/per", per client address (ip), per login or email address
# (key), per signed-in user (user). Past a limit the page answers 429 (users/templates/429.html)
# until the oldest attempt leaves the period. Counted in the default cache:
{%- if redis %}
# Redis, shared by every process that shares REDIS_URL.
{%- else %}
# this process's memory, so each server process counts on its own and a restart forgets.
{%- endif %}
# https://docs.allauth.org/en/latest/account/rate_limits.html
ACCOUNT_RATE_LIMITS = {
    # Failed logins: 10 a minute from one address, 5 in 5 minutes on one login as typed (the
    # username and the email address count apart).
    "login_failed": "10/m/ip,5/5m/key",
    # Every login form sent, right or wrong.
    "login": "30/m/ip",
    "signup": "20/m/ip",
    # Password reset emails: 20 a minute from one address, 5 a minute to one address.
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    # Verification emails: one every 3 minutes to one address (more are not sent).
    "confirm_email": "1/3m/key",
    "change_password": "5/m/user",
}


# Background tasks: work that runs after the response, in a worker process (Procfile's
# `worker:` line), such as the site's email. The database backend keeps each task in a table of
# the site's own database, so nothing else has to run, a task enqueued in a transaction that
# rolls back is never run, and results stay there until `manage.py prune_db_task_results`
# deletes them. An immediate or dummy backend in production is refused (check asgi.E013).
# https://docs.djangoproject.com/en/stable/topics/tasks/
# https://github.com/RealOrangeOne/django-tasks-db

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


# Database, from DATABASE_URL.
# https://docs.djangoproject.com/en/stable/ref/settings/#databases
{%- if cookiecutter.database == "postgresql" %}
# Django's native psycopg pool (5.1+) lends each request one connection of a bounded set and
# takes it back when the request ends; it requires CONN_MAX_AGE = 0. With health checks, a
# connection that the server closed (a restart) is replaced before a request gets it.
# https://docs.djangoproject.com/en/stable/ref/databases/#connection-pool

DATABASES = {
    "default": env_url(
        "DATABASE_URL",
        env.db_url_config,
        default="postgres:///{{ slug }}",
        example="postgres://user:password@host:5432/name",
    ),
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
    "min_size": 1,
    # Per server process: keep processes times max_size below PostgreSQL's max_connections
    # (100 by default). A request holds one connection at most, from its first query to its
    # end; more requests than this wait for one.
    "max_size": env_int("DATABASE_POOL_MAX_SIZE", default=20, minimum=1),
    # Fail a request after 10 s without a free connection instead of queueing for 30 s.
    "timeout": 10,
    # At most this many requests wait for a connection; more fail at once. Waiting requests
    # hold request threads (ASGI_REQUEST_THREADS): a database that is out of connections must
    # not keep pages that never query it waiting too.
    "max_waiting": env_int("DATABASE_POOL_MAX_WAITING", default=16),
}
{%- else %}

DATABASES = {
    "default": env_url(
        "DATABASE_URL",
        env.db_url_config,
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        example="sqlite:////absolute/path/to/db.sqlite3",
    ),
}
{%- endif %}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# Internationalization
# https://docs.djangoproject.com/en/stable/topics/i18n/

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True


# Static files, served by the application itself through ServeStatic, which (unlike
# WhiteNoise) streams files asynchronously under ASGI. Run `manage.py collectstatic` before
# starting in production; in development (DEBUG) it finds them where they live.
# https://docs.djangoproject.com/en/stable/howto/static-files/
# https://archmonger.github.io/ServeStatic/latest/django-settings/

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
}
# Tests and development run without collectstatic: let unhashed names through.
SERVESTATIC_MANIFEST_STRICT = False
{%- if cookiecutter.websockets %}


# Channels: the channel layer carries messages between consumers (the room groups).
# https://channels.readthedocs.io/en/stable/topics/channel_layers.html
{%- if redis %}
# Redis lets every process and machine that shares REDIS_URL reach every room. The pub/sub
# layer fans out faster than RedisChannelLayer and subscribes again by itself once Redis is
# back. socket_timeout: fail a send after 10 s rather than hang if Redis stops answering.
# Leave redis-py's "retry" option unset: with an explicit Retry, the layer's receive loop
# gives up for good after a Redis restart, and open WebSockets never hear their room again.

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# With Redis Sentinel, the Sentinels (REDIS_SENTINELS=host:port,...) say which server is the
# primary of REDIS_SENTINEL_MASTER, before and after a failover; REDIS_URL then gives only
# the database number and the password.
# https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/
REDIS_SENTINELS: list[tuple[str, int]] = []
for _sentinel in env.list("REDIS_SENTINELS", default=[]):
    _host, _, _port = _sentinel.strip().rpartition(":")
    if not _host or not _port.isdigit():
        stop(f"REDIS_SENTINELS has {_sentinel!r}: expected host:port, comma-separated.")
    REDIS_SENTINELS.append((_host, int(_port)))
REDIS_SENTINEL_MASTER = env.str("REDIS_SENTINEL_MASTER", default="mymaster")

if REDIS_SENTINELS:
    _redis = {
        "sentinels": REDIS_SENTINELS,
        "master_name": REDIS_SENTINEL_MASTER,
        "sentinel_kwargs": {"socket_timeout": 2},
        **redis_connection_options(REDIS_URL),
    }
else:
    _redis = {"address": REDIS_URL}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{**_redis, "socket_timeout": 10}]},
    },
}

# Cache, on the same Redis.
# https://docs.djangoproject.com/en/stable/topics/cache/#redis

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        "KEY_PREFIX": "{{ slug }}",
    },
}
if REDIS_SENTINELS:
    # Through the Sentinels (asgi_runtime/sentinel.py).
    CACHES["default"]["OPTIONS"]["pool_class"] = SentinelPool
{%- else %}
# The in-memory layer works inside one process only: run one server process (no workers).
# The asgi.E001 check refuses to start several.

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
{%- endif %}

# What one WebSocket connection may send (asgi_runtime/limits.py): larger messages close it with code 4009,
# more messages a second than the rate allows, beyond the burst, close it with 4008. A client
# that reads nothing sent to it for WEBSOCKET_SEND_TIMEOUT seconds is dropped.
WEBSOCKET_MAX_MESSAGE_BYTES = 1024 * 1024
WEBSOCKET_MESSAGE_RATE = env_float("WEBSOCKET_MESSAGE_RATE", default=10)
WEBSOCKET_MESSAGE_BURST = env_int("WEBSOCKET_MESSAGE_BURST", default=30)
WEBSOCKET_SEND_TIMEOUT = env_float("WEBSOCKET_SEND_TIMEOUT", default=20)
ROOMS_REQUIRE_LOGIN = env_bool("ROOMS_REQUIRE_LOGIN", default=not DEBUG)  # Who may chat: README.md
{%- endif %}
{%- if not redis %}

# Cache: each process's own memory, unless CACHE_URL names one that every server process
# shares, as the login limits need with several (asgi.W014): dbcache://django_cache (after
# `manage.py createcachetable`), or filecache:///var/tmp/{{ slug }}-cache on one machine.
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-cache-url
CACHES = {
    "default": env_url(
        "CACHE_URL",
        env.cache_url_config,
        default="locmemcache://",
        example="dbcache://django_cache",
    ),
}
{%- endif %}


# Email: one URL gives the mail server, its port, TLS and credentials (django-environ's email
# URLs): smtp+tls://user:password@smtp.example.com:587 (STARTTLS), smtp+ssl://...:465 (TLS
# from the first byte), smtp://127.0.0.1:1025 (a local mail catcher, no TLS), consolemail://
# (printed on stdout, links whole: the development default; asgi_runtime/mail.py).
# Percent-encode reserved characters in the user and password (@ is %40). Production has no
# default: `check --deploy` reports asgi.E012 until EMAIL_URL, and DJANGO_DEFAULT_FROM_EMAIL
# with it, are set. Django 6.1 reads MAILERS, Django 5.2 the EMAIL_* settings.
# https://docs.djangoproject.com/en/stable/topics/email/
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-email-url

_email = env_url(
    "EMAIL_URL",
    env.email_url_config,
    default="consolemail://" if DEBUG else "",
    example="smtp+tls://user:password@smtp.example.com:587",
)
_email_backend = _email.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
if _email_backend == "django.core.mail.backends.console.EmailBackend":
    _email_backend = "asgi_runtime.mail.ConsoleEmailBackend"
_email_tls, _email_ssl = bool(_email.get("EMAIL_USE_TLS")), bool(_email.get("EMAIL_USE_SSL"))
_smtp = {
    "host": _email.get("EMAIL_HOST") or "",
    "port": _email.get("EMAIL_PORT") or (465 if _email_ssl else 587 if _email_tls else 25),
    "username": _email.get("EMAIL_HOST_USER") or "",
    "password": _email.get("EMAIL_HOST_PASSWORD") or "",
    "use_tls": _email_tls,
    "use_ssl": _email_ssl,
    # Seconds before a silent mail server fails the request that sends, instead of holding it.
    "timeout": 10,
}
if django.VERSION >= (6, 1):
    _options = _smtp if _email_backend.endswith(".smtp.EmailBackend") else {}
    MAILERS = {
        "default": {
            "BACKEND": _email_backend,
            "OPTIONS": {name: value for name, value in _options.items() if value},
        },
    }
else:
    EMAIL_BACKEND = _email_backend
    EMAIL_HOST = _smtp["host"]
    EMAIL_PORT = _smtp["port"]
    EMAIL_HOST_USER = _smtp["username"]
    EMAIL_HOST_PASSWORD = _smtp["password"]
    EMAIL_USE_TLS = _smtp["use_tls"]
    EMAIL_USE_SSL = _smtp["use_ssl"]
    EMAIL_TIMEOUT = _smtp["timeout"]
# The sender of the site's email (verification, password reset), and of error reports.
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="webmaster@localhost")
SERVER_EMAIL = env.str("DJANGO_SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)


# Security: HTTPS everywhere outside development, behind a TLS-terminating proxy.
# SECURE_PROXY_SSL_HEADER is deliberately unset: it would believe X-Forwarded-Proto from any
# client. The scheme Django sees already comes from that header, and only from the proxies
{%- if cookiecutter.server == "uvicorn" %}
# in FORWARDED_ALLOW_IPS (uvicorn's --forwarded-allow-ips, in the Procfile).
{%- else %}
# in FORWARDED_ALLOW_IPS (the proxy-headers middleware in asgi.py).
{%- endif %}
# https://docs.djangoproject.com/en/stable/ref/middleware/#module-django.middleware.security
# https://docs.djangoproject.com/en/stable/howto/deployment/checklist/

SECURE_SSL_REDIRECT = not DEBUG
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# One year, subdomains included, eligible for browsers' preload lists: lower it (or set it to
# 0) while trying HTTPS out, as browsers remember it.
SECURE_HSTS_SECONDS = 0 if DEBUG else env_int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True

# Content Security Policy: what a page may load and run, sent with every response. Scripts and
# styles come from this site, as static files or inline with the page's nonce (the nonce
# attribute, set from the csp_nonce template variable); there is no 'unsafe-inline', so that
# markup injected into a page runs nothing. connect-src 'self' covers fetch() and WebSockets to
# this host (ws: and wss: included, as browsers implementing CSP Level 3 do). To load anything
# from elsewhere (a CDN, an analytics script, a social login's form), add its origin to the
# directive concerned. https://docs.djangoproject.com/en/stable/ref/csp/
SECURE_CSP: dict[str, list[str]] = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    # The favicon is a data: URL (base.html).
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    # As X-Frame-Options: DENY, for browsers that read only this.
    "frame-ancestors": [CSP.NONE],
}
# A policy that browsers only report on (in the console, and to a report-uri if it has one),
# blocking nothing: to try a stricter one before enforcing it. Written like SECURE_CSP.
SECURE_CSP_REPORT_ONLY: dict[str, list[str]] = {}
if django.VERSION < (6, 0):
    # django-csp's settings, from the same directives. It sends the directives it knows (all
    # of CSP Level 3's) in an order of its own, and leaves out any other.
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": SECURE_CSP}
    CONTENT_SECURITY_POLICY_REPORT_ONLY = (
        {"DIRECTIVES": SECURE_CSP_REPORT_ONLY} if SECURE_CSP_REPORT_ONLY else None
    )


# Logging on stdout: readable lines in development, one JSON object per line in production
# (for a log collector). DJANGO_LOG_FORMAT=text or json overrides.
# https://docs.djangoproject.com/en/stable/topics/logging/

LOG_LEVEL = env_choice(
    "DJANGO_LOG_LEVEL", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
)
LOG_FORMAT = env_choice(
    "DJANGO_LOG_FORMAT", default="text" if DEBUG else "json", choices=["text", "json"]
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "filters": {
        # A request with a foreign Host is the client's mistake (or a scanner's): one line at
        # WARNING, not an error with a traceback.
        "client_mistake": {"()": "asgi_runtime.logs.ClientMistake"},
        # The tasks' worker stopping on a signal, as it does at every deploy: INFO, not WARNING.
        "worker_stop": {"()": "asgi_runtime.logs.WorkerStop"},
{%- if cookiecutter.server == "hypercorn" and cookiecutter.websockets %}
        # A client dropped for not reading (asgi_runtime/limits.py): one line, not a traceback.
        "connection_timed_out": {"()": "asgi_runtime.logs.ConnectionTimedOut"},
{%- endif %}
{%- if cookiecutter.server == "daphne" %}
        # daphne's HTTP/2 notice at every start (it speaks HTTP/2 over TLS only).
        "http2_notice": {"()": "asgi_runtime.logs.Http2Notice"},
{%- endif %}
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
        },
    },
    # Everything that propagates to the root logger (the project's apps, libraries) lands
    # on stdout; the servers' own loggers keep their handlers.
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Django's defaults (console in debug only, email to admins) give way to stdout.
        "django": {"handlers": ["stdout"], "level": LOG_LEVEL, "propagate": False},
        "django.security.DisallowedHost": {
            "handlers": ["stdout"],
            "filters": ["client_mistake"],
            "propagate": False,
        },
        "django_tasks_db": {"filters": ["worker_stop"]},
{%- if cookiecutter.server == "daphne" %}
        "daphne.server": {"filters": ["http2_notice"]},
{%- endif %}
{%- if cookiecutter.server == "hypercorn" %}
        # hypercorn's loggers have handlers of their own.
        "hypercorn": {"propagate": False},
{%- if cookiecutter.websockets %}
        "asyncio": {"filters": ["connection_timed_out"]},
{%- endif %}
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}
        # The connection pool warns when it cannot connect; its INFO lines are noise.
        "psycopg": {"level": "WARNING"},
{%- endif %}
    },
}


# Error reporting: with SENTRY_DSN set, every unhandled exception and every log line at ERROR
# is sent to Sentry (or to a server that speaks its protocol, GlitchTip for one), with the
# request's URL and headers but no cookies, passwords or user details (send_default_pii).
# Without SENTRY_DSN, sentry_sdk is not even imported. Errors in a background task reach it the
# same way once the worker runs under these settings and logs or raises them.
# https://docs.sentry.io/platforms/python/integrations/django/

SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
{%- if cookiecutter.server in ["daphne", "granian"] %}
    from sentry_sdk.integrations.logging import ignore_logger
{%- endif %}

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        integrations=[DjangoIntegration()],
        environment=env.str("SENTRY_ENVIRONMENT", default="development" if DEBUG else "production"),
        # The version running: SENTRY_RELEASE (the container image sets it when built with
        # --build-arg RELEASE=...), else the commit checked out here, if this is a git clone.
        release=env.str("SENTRY_RELEASE", default="") or None,
        # The share of requests traced for performance, 0 to 1: 0 (the default) traces none
        # and costs nothing per request.
        traces_sample_rate=env_float("SENTRY_TRACES_SAMPLE_RATE", default=0.0, maximum=1) or None,
        send_default_pii=False,
        # Neither request bodies nor local variables: either may hold a password, a token or a
        # cookie under a name that Sentry's scrubber does not know (password1, value, scope).
        max_request_body_size="never",
        include_local_variables=False,
    )
{%- if cookiecutter.server == "daphne" %}
    # daphne logs what the application raised, which Sentry has already had from the
    # application: once is enough.
    ignore_logger("daphne.server")
{%- elif cookiecutter.server == "granian" %}
    # granian logs what the application raised, which Sentry has already had from the
    # application: once is enough.
    ignore_logger("_granian.utils")
{%- endif %}
