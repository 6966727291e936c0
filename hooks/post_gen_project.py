"""Trim the baked project to the answers given, write a local .env, print the next steps.

Runs with the generated project as the working directory. Needs no network.
"""

import secrets
import shutil
from pathlib import Path

SLUG = {{ cookiecutter.project_slug | tojson }}
SERVER = {{ cookiecutter.server | tojson }}
WEBSOCKETS = {{ cookiecutter.websockets }}  # a boolean: renders as True or False
CHANNEL_LAYER = {{ cookiecutter.channel_layer | tojson }}
DATABASE = {{ cookiecutter.database | tojson }}

# Every file that only some answers need: path -> whether this bake keeps it.
KEEP = {
    "hypercorn.toml": SERVER == "hypercorn",
    "rooms": WEBSOCKETS,
    "tests/test_rooms.py": WEBSOCKETS,
    # daphne's own runserver is an ASGI server; the others need the warning override.
    "rooms/management": WEBSOCKETS and SERVER != "daphne",
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
    example = Path(".env.example").read_text()
    secret = secrets.token_urlsafe(50)
    Path(".env").write_text(
        example.replace("DJANGO_SECRET_KEY=", f"DJANGO_SECRET_KEY={secret}", 1)
    )


def dev_command():
    """The `web:` line of Procfile.dev: the one place the development command is written."""
    for line in Path("Procfile.dev").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()


def main():
    remove_unused()
    write_dot_env()
    print(f"\nCreated {SLUG}/, served by {SERVER}. Next steps (README.md says more):\n")
    print(f"    cd {SLUG}")
    print("    uv run python manage.py migrate")
    print(f"    uv run {dev_command()}\n")


if __name__ == "__main__":
    main()
