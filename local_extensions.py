"""Jinja filters for cookiecutter.json and the hooks, loaded through its `_extensions` key."""

import keyword
import sys

from cookiecutter.utils import simple_filter
from slugify import slugify

# What the default package name may be, at most (hooks/pre_gen_project.py refuses longer).
MAX_PACKAGE_NAME = 32

# Names the project itself uses: what it creates beside its package, and every package of
# its dependency tree (from uv.lock files), by distribution and import name: uv refuses a
# project named like a dependency, and Python would import the project instead of it.
TAKEN_NAMES = {
    # created beside the project's own package
    *"""
    asgi_runtime conftest manage rooms staticfiles test tests users
    """.split(),
    # distribution and import names of every dependency, for any combination of options
    *"""
    anyio asgiref async_timeout attr attrs autobahn automat cbor2 cffi channels
    channels_redis click colorama constantly cryptography daphne django django_environ granian
    dotenv environ h11 h2 hpack httptools hypercorn hyperframe hyperlink idna incremental
    iniconfig msgpack openssl packaging pluggy priority psycopg psycopg_binary psycopg_pool
    py pycparser pygments pyopenssl pytest pytest_asyncio pytest_django python_dotenv
    python_json_logger pythonjsonlogger pyyaml redis ruff servestatic service_identity
    setuptools sqlparse twisted txaio typing_extensions tzdata u_msgpack_python ujson
    umsgpack uvicorn uvloop watchfiles websockets wsproto yaml zope zope_interface
    """.split(),
}


def is_taken(name):
    """Whether a package of this name would shadow a module the project imports."""
    return name in TAKEN_NAMES or name in sys.stdlib_module_names or keyword.iskeyword(name)


@simple_filter
def package_name(project_name):
    """A Python package name for a project name: "Café Déjà Vu" gives "cafe_deja_vu".

    ASCII transliteration, lower case, words joined by "_", apostrophes dropped ("Bob's Chat"
    gives "bobs_chat"), cut at a word boundary; a name that would start with a digit gets
    "project_" in front ("2FA Service" gives "project_2fa_service"), one that would shadow a
    module the project imports gets "_project" after it ("Django" gives "django_project"), and
    one without a letter or digit is "project".
    """
    words = project_name.replace("'", "").replace("\u2019", "")
    if slugify(words)[:1].isdigit():
        words = f"project {words}"
    name = slugify(words, separator="_", max_length=MAX_PACKAGE_NAME, word_boundary=True)
    if is_taken(name):
        name = f"{name}_project"
    return name or "project"


@simple_filter
def taken_names(_):
    """TAKEN_NAMES, sorted, for the pre-generation hook to refuse."""
    return sorted(TAKEN_NAMES)
