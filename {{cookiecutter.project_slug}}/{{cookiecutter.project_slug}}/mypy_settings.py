"""
The settings mypy's Django plugin imports ([tool.django-stubs] in pyproject.toml): the project's
own, in production mode, with placeholders for what production must set, so that type checking
needs no .env, no secret and no service running. The plugin sets these variables for its own
import only; nothing else reads this module.
"""

import os

os.environ.update(
    DJANGO_READ_DOT_ENV="false",
    DJANGO_DEBUG="false",
    DJANGO_SECRET_KEY="type-checking-only",
    DJANGO_ALLOWED_HOSTS="localhost",
)

from .settings import *  # noqa: E402, F403
