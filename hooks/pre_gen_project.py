"""Refuse answers that would bake a broken project, before a single file is written.

Cookiecutter runs this before rendering; exiting non-zero aborts the bake and removes the
output directory it created. Each problem is reported on one line.
"""

import keyword
import sys

# User answers arrive as JSON data, never pasted into code.
SLUG = {{ cookiecutter.project_slug | tojson }}
WEBSOCKETS = {{ cookiecutter.websockets }}  # a boolean: renders as True or False
CHANNEL_LAYER = {{ cookiecutter.channel_layer | tojson }}

# Long enough for any sensible package name, short enough that every rendered line fits.
MAX_SLUG_LENGTH = 32

# Top-level modules the generated project imports, or creates beside its own package:
# a project package of the same name would shadow them.
PROJECT_MODULES = {
    "asgiref",
    "channels",
    "channels_redis",
    "conftest",
    "daphne",
    "django",
    "environ",
    "h11",
    "httptools",
    "hypercorn",
    "manage",
    "psycopg",
    "psycopg_pool",
    "pytest",
    "pytest_django",
    "pythonjsonlogger",
    "redis",
    "rooms",
    "servestatic",
    "test",
    "tests",
    "twisted",
    "uvicorn",
    "uvloop",
    "websockets",
}


def slug_problem(slug):
    if not (slug.isascii() and slug.isidentifier()):
        return (
            f"project_slug {slug!r} is not a valid Python identifier: use lowercase letters, "
            "digits and underscores, not starting with a digit."
        )
    if len(slug) > MAX_SLUG_LENGTH:
        return (
            f"project_slug {slug!r} is {len(slug)} characters long: keep it to "
            f"{MAX_SLUG_LENGTH} or fewer (it is typed in every import)."
        )
    if keyword.iskeyword(slug):
        return f"project_slug {slug!r} is a Python keyword: choose another name."
    if slug in sys.stdlib_module_names or slug in PROJECT_MODULES:
        return (
            f"project_slug {slug!r} would shadow the {slug!r} module the project imports: "
            "choose another name."
        )
    return None


def main():
    problems = [slug_problem(SLUG)]
    if CHANNEL_LAYER == "redis" and not WEBSOCKETS:
        problems.append(
            "channel_layer 'redis' needs websockets: answer websockets=yes, or keep "
            "channel_layer 'in-memory'."
        )
    problems = [problem for problem in problems if problem]
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
