"""Settings as production reads them: a script run in a process of its own."""

import json
import os
import subprocess
import sys

from django.conf import settings


def in_production(*arguments, unset=(), **variables):
    """Run Python with `arguments` (["-c", script] or ["manage.py", "check"]) and
    DJANGO_SETTINGS_MODULE (pytest-django put it in the environment), debug off, no .env, the
    environment's variables named in `unset` left out and `variables` added; return the
    finished process, its output as text."""
    env = {
        **{name: value for name, value in os.environ.items() if name not in unset},
        "DJANGO_READ_DOT_ENV": "false",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "s" * 50,
        "DJANGO_ALLOWED_HOSTS": "example.com",
        **variables,
    }
    return subprocess.run(
        [sys.executable, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )


def run_in_production(script, *, unset=(), **variables):
    """Run `script` in production (in_production); return the first line it printed, read as
    JSON."""
    shown = in_production("-c", script, unset=unset, **variables)
    assert shown.returncode == 0, shown.stderr
    # The first line: before anything a library logs on its way out.
    return json.loads(shown.stdout.splitlines()[0])
