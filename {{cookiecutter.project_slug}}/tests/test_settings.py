{%- set sqlite = cookiecutter.database == "sqlite" -%}
"""A variable settings.py cannot read stops start-up with one line that names it: no traceback,
and nothing left behind."""

import pytest

from .production import in_production

# Variables, what settings.py makes of them, and the start of the line that says so.
MALFORMED = {
    "not a number": (
        {"REQUEST_MAX_BODY_BYTES": "10MB"},
        "REQUEST_MAX_BODY_BYTES is '10MB': expected a whole number of 0 or more",
    ),
    "not a whole number": (
        {"DJANGO_SECURE_HSTS_SECONDS": "abc"},
        "DJANGO_SECURE_HSTS_SECONDS is 'abc': expected a whole number",
    ),
    "below the minimum": (
        {"ASGI_REQUEST_THREADS": "0"},
        "ASGI_REQUEST_THREADS is '0': expected a whole number of 1 or more",
    ),
{%- if cookiecutter.websockets %}
    "letters for a number": (
        {"WEBSOCKET_MESSAGE_RATE": "abc"},
        "WEBSOCKET_MESSAGE_RATE is 'abc': expected a number of 0 or more",
    ),
    # django-environ's own env.float reads it as 1.0.
    "a letter O for a zero": (
        {"WEBSOCKET_MESSAGE_RATE": "1O"},
        "WEBSOCKET_MESSAGE_RATE is '1O': expected a number",
    ),
{%- endif %}
    # django-environ's own env.bool reads any typo as false: here, Django's admin login form,
    # without the site's limits and second factor.
    "a misspelt boolean": (
        {"DJANGO_ADMIN_FORCE_ALLAUTH": "ture"},
        "DJANGO_ADMIN_FORCE_ALLAUTH is 'ture': expected true or false",
    ),
    "a choice that is not one": (
        {"ACCOUNT_EMAIL_VERIFICATION": "mandtory"},
        "ACCOUNT_EMAIL_VERIFICATION is 'mandtory': expected one of mandatory, optional, none",
    ),
    "a log level that is not one": (
        {"DJANGO_LOG_LEVEL": "verbose"},
        "DJANGO_LOG_LEVEL is 'verbose': expected one of DEBUG, INFO",
    ),
    "an email URL without its colon": (
        {"EMAIL_URL": "smtp//oops"},
        "EMAIL_URL is not a URL that django-environ can read: expected one like smtp+tls://",
    ),
    "a database URL without a scheme": (
        {"DATABASE_URL": "foo"},
        "DATABASE_URL is not a URL that django-environ can read",
    ),
    # The line does not repeat the URL: it holds a password.
    "a database URL with a port that is not a number": (
        {"DATABASE_URL": "postgres://user:s3cret@db.example.com:54x2/site"},
        "DATABASE_URL is not a URL that django-environ can read",
    ),
{%- if cookiecutter.channel_layer != "redis" %}
    "a cache URL without its colon": (
        {"CACHE_URL": "dbcache//django_cache"},
        "CACHE_URL is not a URL that django-environ can read: expected one like dbcache://",
    ),
{%- endif %}
{%- if sqlite %}
    "an SQLite database in a directory that does not exist": (
        {"DATABASE_URL": "sqlite:////nonexistent/dir/db.sqlite3"},
        "DATABASE_URL: the directory of the SQLite database, /nonexistent/dir, does not exist",
    ),
{%- endif %}
}


def assert_one_line_naming_it(finished, expected):
    assert finished.returncode != 0
    assert "Traceback" not in finished.stdout + finished.stderr
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith(f"ImproperlyConfigured: {expected}"), lines[0]
    assert "s3cret" not in lines[0]


@pytest.mark.parametrize(("variables", "expected"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_variable_stops_start_up_with_one_line(variables, expected):
    finished = in_production("-c", "import django; django.setup()", **variables)

    assert_one_line_naming_it(finished, expected)


@pytest.mark.parametrize("command", ["check", "migrate"])
def test_manage_py_stops_with_the_same_line(command):
    finished = in_production("manage.py", command, ACCOUNT_EMAIL_VERIFICATION="mandtory")

    assert_one_line_naming_it(finished, "ACCOUNT_EMAIL_VERIFICATION is 'mandtory'")
{%- if sqlite %}


@pytest.mark.parametrize("command", ["check", "migrate"])
def test_an_sqlite_database_without_its_directory_stops_manage_py(command, tmp_path):
    missing = tmp_path / "no" / "such" / "directory"
    finished = in_production("manage.py", command, DATABASE_URL=f"sqlite:///{missing}/db.sqlite")

    # Not Django's traceback ("unable to open database file"), before asgi.E009 could run.
    assert_one_line_naming_it(
        finished, f"DATABASE_URL: the directory of the SQLite database, {missing},"
    )
    assert not (tmp_path / "no").exists()
{%- endif %}


def test_a_well_formed_variable_is_read_as_its_type():
    finished = in_production(
        "-c",
        "from django.conf import settings as s;"
        " print(s.REQUEST_MAX_BODY_BYTES, s.ACCOUNT_EMAIL_VERIFICATION, s.LOG_LEVEL)",
        REQUEST_MAX_BODY_BYTES=" 1000 ",
        ACCOUNT_EMAIL_VERIFICATION="None",
        DJANGO_LOG_LEVEL="warning",
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["1000", "none", "WARNING"]


def test_production_mail_from_djangos_default_sender_fails_the_deployment_checks(tmp_path):
    deploy = ("manage.py", "check", "--deploy")
    smtp = {"EMAIL_URL": "smtp+tls://user:password@smtp.example.com:587"}
{%- if sqlite %}
    # The checks open the database (a JSONField's): a file of the test's, not the project's.
    smtp["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
{%- endif %}

    without = in_production(*deploy, unset=["DJANGO_DEFAULT_FROM_EMAIL"], **smtp)
    with_sender = in_production(*deploy, DJANGO_DEFAULT_FROM_EMAIL="noreply@example.com", **smtp)

    assert without.returncode != 0
    assert "asgi.E012" in without.stderr and "DJANGO_DEFAULT_FROM_EMAIL" in without.stderr
    assert "Traceback" not in without.stderr
    assert with_sender.returncode == 0, with_sender.stderr
