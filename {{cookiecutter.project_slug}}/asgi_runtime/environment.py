"""
Reading settings from the environment, for settings.py: django-environ's `env`, and typed
readers that stop start-up with one line naming the variable and the form expected, instead of
a traceback or a silent misreading (django-environ's env.int and env.float raise a bare
ValueError or read "1O" as 1.0; its env.bool reads any typo, "ture" or "flase", as false).
Unset or empty, a variable takes its default.
"""

import math
import sys
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()


def stop(reason):
    """Stop start-up with one line that gives the reason, not a traceback."""
    print(f"ImproperlyConfigured: {reason}", file=sys.stderr)
    # 3, as asgi_runtime/checks.py explains: servers with workers then stop instead of retrying.
    raise SystemExit(3)


def required(name, value):
    """`value`, or a stop that names the missing variable."""
    if not value:
        stop(
            f"{name} is not set. Set it in the environment; for local development, copy"
            " .env.example to .env (it turns DJANGO_DEBUG on)."
        )
    return value


def env_int(name, default, *, minimum=0):
    """The whole number in `name`, at least `minimum`."""
    return _env_number(name, default, int, "a whole number", minimum)


def env_float(name, default, *, minimum=0, maximum=None):
    """The number in `name` (10, 2.5, 1e3), from `minimum` to `maximum`."""
    return _env_number(name, default, float, "a number", minimum, maximum)


def _env_number(name, default, kind, form, minimum, maximum=None):
    text = env.str(name, default="").strip()
    if not text:
        return default
    try:
        value = kind(text)
        fits = math.isfinite(value) and value >= minimum and (maximum is None or value <= maximum)
    except ValueError:
        fits = False
    if not fits:
        bounds = f"of {minimum} or more" if maximum is None else f"from {minimum} to {maximum}"
        stop(f"{name} is {text!r}: expected {form} {bounds} (the default is {default}).")
    return value


def env_bool(name, default):
    """true or false in `name` (also yes/no, on/off, 1/0, in any case)."""
    text = env.str(name, default="").strip()
    if not text:
        return default
    if text.lower() not in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        stop(f"{name} is {text!r}: expected true or false.")
    return text.lower() in ("true", "yes", "on", "1")


def env_choice(name, default, choices):
    """One of `choices` in `name`, whatever its case, spelt as in `choices`."""
    text = env.str(name, default="").strip()
    if not text:
        return default
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    stop(f"{name} is {text!r}: expected one of {', '.join(choices)}.")


def env_url(name, parse, default, example):
    """The URL in `name` as django-environ's `parse` (env.db_url_config, env.email_url_config,
    env.cache_url_config) reads it into settings; {} if it is unset without a default. The stop
    for a URL that cannot be read does not repeat it: it may hold a password."""
    text = env.str(name, default="").strip() or default
    if not text:
        return {}
    with warnings.catch_warnings():
        # django-environ's warning about an unknown scheme repeats the URL, password and all.
        warnings.simplefilter("ignore")
        try:
            config = parse(text)
        except (ValueError, ImproperlyConfigured):
            config = {}
    # An unknown scheme leaves the database's ENGINE empty, and raises for email and caches.
    if not (config.get("ENGINE") or config.get("EMAIL_BACKEND") or config.get("BACKEND")):
        stop(f"{name} is not a URL that django-environ can read: expected one like {example}.")
    # SQLite creates the file, not its directory: without one, every command would fail with a
    # long traceback ("unable to open database file") before the asgi.E009 check could say so.
    directory = Path(config.get("NAME") or ".").parent
    if config.get("ENGINE", "").endswith("sqlite3") and not directory.is_dir():
        stop(
            f"{name}: the directory of the SQLite database, {directory}, does not exist. Create"
            f" it, or give {name} a path in a directory that does."
        )
    return config
