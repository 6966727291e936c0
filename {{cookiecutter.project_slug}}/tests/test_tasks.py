"""Background tasks on the database backend, run by the worker as production runs them."""

import re

import django
import pytest
from asgiref.sync import async_to_sync
from django.core import serializers
from django.core.mail import EmailMessage
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult, get_date_max

from asgi_runtime.management.commands.tasks_worker import (
    FileLiveness,
    fail_tasks_of_lost_workers,
)
from asgi_runtime.tasks import TaskResultStatus
from users.models import User
from users.tasks import seal, send_email, send_later

# The worker claims tasks in transactions of its own.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def database_backend(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def run_worker():
    """The worker of Procfile, until no task is left."""
    call_command("tasks_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)


def stored_tasks():
    """Every field of every stored task (arguments, result, error), as the admin and a backup
    of the database see them."""
    return serializers.serialize("json", DBTaskResult.objects.all())


def hello(body="Body"):
    return EmailMessage("Hello", body, "from@example.com", ["to@example.com"])


def test_a_task_waits_for_the_worker_which_stores_its_result(mailoutbox):
    result = send_later(hello())
    assert result.status == TaskResultStatus.READY
    assert mailoutbox == []

    run_worker()

    result.refresh()
    # (The ignore: mypy holds on to the READY above, which refresh() changed.)
    assert result.status == TaskResultStatus.SUCCESSFUL  # type: ignore[comparison-overlap]
    [message] = mailoutbox
    assert (message.subject, message.to) == ("Hello", ["to@example.com"])


def test_a_task_that_raises_is_marked_failed_with_its_error(settings):
    # A mail backend that cannot be imported: the task raises as it sends. Django 6.1 reads
    # MAILERS (and warns about EMAIL_BACKEND), Django 5.2 EMAIL_BACKEND.
    missing = "no_such_mail_package.EmailBackend"
    if django.VERSION >= (6, 1):
        settings.MAILERS = {"default": {"BACKEND": missing}}
    else:
        settings.EMAIL_BACKEND = missing
    result = send_later(hello("A secret body"))

    run_worker()

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert "No module named 'no_such_mail_package'" in result.errors[-1].traceback
    assert "A secret body" not in stored_tasks()


def test_a_password_reset_link_is_never_stored_in_clear(client, admin_client, mailoutbox):
    User.objects.create_user("erin", "erin@example.com", "a long passphrase")
    client.post("/accounts/password/reset/", {"email": "erin@example.com"})
    [task] = DBTaskResult.objects.all()
    admin_page = f"/admin/django_tasks_database/dbtaskresult/{task.id}/change/"
    queued = stored_tasks() + admin_client.get(admin_page).content.decode()

    run_worker()

    [message] = mailoutbox
    url = re.search(r"https?://\S+/accounts/password/reset/key/(\S+)/", message.body)
    assert url, message.body
    done = stored_tasks() + admin_client.get(admin_page).content.decode()
    assert "SUCCESSFUL" in done
    key = url.group(1).rsplit("-", 1)[-1]
    for secret in (url.group(), key, message.body, "erin@example.com"):
        assert secret not in queued
        assert secret not in done


def test_waiting_email_survives_a_new_secret_key_kept_as_a_fallback(settings, mailoutbox):
    result = send_later(hello())
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a new key " * 5

    run_worker()

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert mailoutbox[0].body == "Body"


def test_waiting_email_fails_loudly_after_a_new_secret_key_without_fallback(settings, mailoutbox):
    result = send_later(hello())
    settings.SECRET_KEY = "a new key " * 5
    settings.SECRET_KEY_FALLBACKS = []

    run_worker()

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class_path == "users.tasks.UnreadableEmail"
    assert "SECRET_KEY_FALLBACKS" in result.errors[-1].traceback
    assert mailoutbox == []


def test_the_sign_up_email_is_sent_by_the_worker_not_the_page(client, mailoutbox):
    form = {
        "email": "bob@example.com",
        "username": "bob",
        "password1": "a long passphrase",
        "password2": "a long passphrase",
    }
    response = client.post("/accounts/signup/", form)
    assert response.status_code == 302
    assert mailoutbox == []

    run_worker()

    [message] = mailoutbox
    assert message.to == ["bob@example.com"]
    assert "/accounts/confirm-email/" in message.body


def test_a_task_enqueued_from_async_code_is_run_by_the_worker(mailoutbox):
    # async_to_sync: an event loop of its own, as an async view or a consumer has.
    enqueue = async_to_sync(send_email.aenqueue)
    result = enqueue(seal(hello()))

    run_worker()

    async_to_sync(result.arefresh)()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert len(mailoutbox) == 1


def test_the_running_task_of_a_worker_that_died_is_marked_failed(tmp_path):
    liveness = FileLiveness("default")
    liveness.folder = tmp_path
    liveness.hold("alive")
    running = {
        worker: DBTaskResult.objects.create(
            args_kwargs={"args": [], "kwargs": {}},
            task_path=send_email.module_path,
            backend_name="default",
            run_after=get_date_max(),
            status=TaskResultStatus.RUNNING,
            worker_ids=[worker],
        )
        for worker in ("alive", "gone")
    }

    assert fail_tasks_of_lost_workers(liveness, "default") == [str(running["gone"].id)]

    running["gone"].refresh_from_db()
    running["alive"].refresh_from_db()
    assert running["gone"].status == TaskResultStatus.FAILED
    assert running["gone"].exception_class_path == "asgi_runtime.tasks.WorkerLost"
    assert running["alive"].status == TaskResultStatus.RUNNING
    # Once the live one stops too, its task is the next to go.
    liveness.release()
    assert fail_tasks_of_lost_workers(liveness, "default") == [str(running["alive"].id)]
