"""Trim the baked project to the answers given, write a local .env, print the next steps.

Runs with the generated project as the working directory. Needs no network. Safe to run
again on an existing project (template updates re-run it): it only removes what the answers
exclude and never overwrites an existing .env.
"""

import json
import secrets
import shutil
from pathlib import Path

# Cookiecutter renders this file before running it: the answers arrive as JSON data, never
# pasted into code.
ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")
SLUG = ANSWERS["project_slug"]
SERVER = ANSWERS["server"]
WEBSOCKETS = ANSWERS["websockets"]
CHANNEL_LAYER = ANSWERS["channel_layer"]
DATABASE = ANSWERS["database"]

# Every path that only some answers need: path -> whether this bake keeps it.
KEEP = {
    "hypercorn.toml": SERVER == "hypercorn",
    "rooms": WEBSOCKETS,
    f"{SLUG}/routing.py": WEBSOCKETS,
    "asgi_runtime/consumers.py": WEBSOCKETS,
    "asgi_runtime/limits.py": WEBSOCKETS,
    "asgi_runtime/origins.py": WEBSOCKETS,
    "asgi_runtime/tests/test_origins.py": WEBSOCKETS,
    "asgi_runtime/sentinel.py": CHANNEL_LAYER == "redis",
    "asgi_runtime/tests/test_limits.py": WEBSOCKETS,
    # daphne's own runserver is an ASGI server; the others get one that says they are not.
    "asgi_runtime/management": SERVER != "daphne",
}


def remove_unused():
    for path, keep in KEEP.items():
        path = Path(path)
        if keep or not path.exists():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_dot_env():
    """A development .env with a fresh secret: never a cookiecutter variable (replay files)."""
    dot_env = Path(".env")
    if dot_env.exists():
        return
    example = Path(".env.example").read_text()
    secret = secrets.token_urlsafe(50)
    dot_env.write_text(example.replace("DJANGO_SECRET_KEY=", f"DJANGO_SECRET_KEY={secret}", 1))


def dev_command():
    """The `web:` line of Procfile.dev: the one place the development command is written."""
    for line in Path("Procfile.dev").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()


def next_steps():
    steps = [f"cd {SLUG}"]
    if DATABASE == "postgresql":
        steps.append(f"createdb {SLUG}  # on your PostgreSQL, or set DATABASE_URL in .env")
    if CHANNEL_LAYER == "redis":
        steps.append("redis-server --daemonize yes  # Redis must be running (or set REDIS_URL)")
    steps.append("uv run python manage.py migrate")
    steps.append(f"uv run {dev_command()}")
    return steps


def main():
    remove_unused()
    write_dot_env()
    print(f"\nCreated {SLUG}/, served by {SERVER}. Next steps (README.md says more):\n")
    for step in next_steps():
        print(f"    {step}")
    print()


if __name__ == "__main__":
    main()
