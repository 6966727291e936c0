"""Settings as production reads them: a script run in a process of its own."""

import json
import os
import subprocess
import sys

from django.conf import settings


def run_in_production(script, *, unset=(), **variables):
    """Run `script` with DJANGO_SETTINGS_MODULE (pytest-django put it in the environment),
    debug off, no .env, the environment's variables named in `unset` left out and `variables`
    added; return the first line it printed, read as JSON."""
    env = {
        **{name: value for name, value in os.environ.items() if name not in unset},
        "DJANGO_READ_DOT_ENV": "false",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "s" * 50,
        "DJANGO_ALLOWED_HOSTS": "example.com",
        **variables,
    }
    shown = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )
    assert shown.returncode == 0, shown.stderr
    # The first line: before anything a library logs on its way out.
    return json.loads(shown.stdout.splitlines()[0])
