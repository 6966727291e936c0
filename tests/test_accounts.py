"""
Accounts on real production servers, every server: sign-up with the emailed verification link,
a forgotten password reset by email (sent by the project's worker process), failed logins
refused across two server processes that share Redis, staff signing in to the admin through the
site's login (and its limits), and the rooms closed to visitors who are not signed in; then, on
uvicorn and granian, a real browser signs up, verifies its address from the email and signs in
with a passkey (Chromium's virtual authenticator), and with an authenticator app's code and a
recovery code. Email goes to a real SMTP server on loopback (aiosmtpd), started here; the tests
read what it received.

One project per server (the Redis chat project the browser tests also use), two production
processes and a worker, booted once for every test of this module.
"""

import base64
import contextlib
import email
import email.policy
import hmac
import http.client
import json
import re
import secrets
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import expect
from websockets.exceptions import ConnectionClosed

from browsing import fill_in_sign_up, policy_violations
from harness import HTTPS, free_port, wait_for, websocket
from matrix import OPTIONS, chat_answers, combination_id, only_when
from projects import Project, start_production_server, start_worker
from services import RedisServer

pytestmark = pytest.mark.slow

PASSWORD = secrets.token_urlsafe(12)
NEW_PASSWORD = secrets.token_urlsafe(12)
# What the server log may say about these tests: the refusals they cause on purpose.
EXPECTED_WARNINGS = re.compile(
    r"Too Many Requests: /accounts/login/|Forbidden \(Permission denied\): /admin/login/"
)
# Where /admin/login/ sends a visitor (with production's DJANGO_ADMIN_FORCE_ALLAUTH).
ADMIN_LOGIN = "/accounts/login/?next=%2Fadmin%2F"


class Mailbox:
    """An SMTP server on loopback that keeps every message it receives."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted"

    def received(self, to):
        with self.lock:
            return [message for recipients, message in self.messages if to in recipients]

    def link(self, to, count=1):
        """The path of the link in the `count`th message to `to`, once it arrived."""
        # A bound for a lost email, not a speed: the worker polls every second, but in CI, on
        # 2 loaded cores, a fresh worker's first email took over 20 s.
        wait_for(lambda: len(self.received(to)) >= count, 90, f"email {count} to {to}")
        body = self.received(to)[count - 1].get_body(("plain",)).get_content()
        url = re.search(r"https?://\S+", body)
        assert url, body
        return urllib.parse.urlsplit(url.group()).path


@dataclass
class Site:
    project: Project
    servers: list
    worker: object
    mailbox: Mailbox
    names: list = field(default_factory=list)

    def new_name(self):
        name = f"user{len(self.names)}x{secrets.token_hex(3)}"
        self.names.append(name)
        return name

    def problems(self):
        return [
            line
            for server in [*self.servers, self.worker]
            for line in server.log_problems()
            if not EXPECTED_WARNINGS.search(line)
        ]


@pytest.fixture(
    scope="module",
    params=[chat_answers(server) for server in OPTIONS["server"]],
    ids=combination_id,
)
def site(request, deployed_chat_project, tmp_path_factory):
    """Two production processes of one project, sharing a Redis and a mail server of their own;
    the rooms for signed-in users only, as production has them by default."""
    project = deployed_chat_project(request.param)
    logs = tmp_path_factory.mktemp("accounts")
    with contextlib.ExitStack() as running:
        redis = RedisServer(logs)
        running.callback(redis.stop)
        mailbox = Mailbox()
        mailbox.controller.start()
        running.callback(mailbox.controller.stop)
        ports = [free_port(), free_port()]
        variables = {
            "REDIS_URL": redis.url,
            "EMAIL_URL": f"smtp://127.0.0.1:{mailbox.port}",
            "DJANGO_DEFAULT_FROM_EMAIL": "Chat Demo <noreply@example.com>",
            "ROOMS_REQUIRE_LOGIN": "true",
            # The browser's pages are http://localhost (passkeys want a host name), its proxy
            # headers say HTTPS: the forms' origin must be trusted.
            "DJANGO_CSRF_TRUSTED_ORIGINS": ",".join(f"http://localhost:{port}" for port in ports),
        }
        servers = [
            running.enter_context(
                start_production_server(project, logs / f"{port}.log", port, **variables)
            )
            for port in ports
        ]
        # The site's email is sent by its worker (Procfile's worker: line).
        worker = running.enter_context(start_worker(project, logs / "worker.log", **variables))
        yield Site(project, servers, worker, mailbox)


class Visitor:
    """A browser without JavaScript behind the TLS proxy: cookies, each form's CSRF token, the
    site's public host name and the client address the proxy reports (X-Forwarded-For). Both
    processes are one site: allauth counts an account's failed logins per host name."""

    def __init__(self, server, address="203.0.113.1"):
        self.port = server.port
        self.address = address
        self.cookies = {}

    def request(self, method, path, form=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        headers = {**HTTPS, "Host": "127.0.0.1", "X-Forwarded-For": self.address, **(headers or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = "https://127.0.0.1"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read().decode()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return response.status, response.headers.get("Location", ""), content

    def get(self, path):
        return self.request("GET", path)

    def submit(self, path, form=None):
        """GET the page of a form, then POST `form` to it with the page's CSRF token."""
        status, _, page = self.get(path)
        assert status == 200, (path, status)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        return self.request("POST", path, {**(form or {}), "csrfmiddlewaretoken": token})

    def log_in(self, login, password=PASSWORD, page="/accounts/login/"):
        return self.submit(page, {"login": login, "password": password})

    def signed_in_as(self):
        page = self.get("/")[2]
        found = re.search(r'<strong id="username">([^<]+)</strong>', page)
        return found and found.group(1)


def signed_up(site, visitor):
    """A new account, its address verified through the emailed link: its username."""
    name = site.new_name()
    address = f"{name}@example.com"
    form = {"email": address, "username": name, "password1": PASSWORD, "password2": PASSWORD}
    status, location, _ = visitor.submit("/accounts/signup/", form)
    assert (status, location) == (302, "/accounts/confirm-email/")
    # Not before the address is verified.
    assert visitor.log_in(name)[:2] == (302, "/accounts/confirm-email/")
    assert visitor.signed_in_as() is None

    link = site.mailbox.link(address)
    assert len(site.mailbox.received(address)) == 1  # Not sent twice in 3 minutes.
    assert link.startswith("/accounts/confirm-email/")
    assert visitor.submit(link)[0] == 302
    return name


def test_sign_up_verify_the_address_then_log_in(site):
    visitor = Visitor(site.servers[0], "203.0.113.10")
    name = signed_up(site, visitor)
    [message] = site.mailbox.received(f"{name}@example.com")
    assert message["From"] == "Chat Demo <noreply@example.com>"
    # Sent by the worker, after the sign-up page had answered.
    assert "users.tasks.send_email state=SUCCESSFUL" in site.worker.log

    assert visitor.log_in(name)[:2] == (302, "/")
    assert visitor.signed_in_as() == name
    # The session is good on the other process too.
    other = Visitor(site.servers[1], visitor.address)
    other.cookies = dict(visitor.cookies)
    assert other.signed_in_as() == name
    assert site.problems() == []


def test_a_forgotten_password_is_reset_by_email(site):
    name = signed_up(site, Visitor(site.servers[0], "203.0.113.20"))
    address = f"{name}@example.com"
    visitor = Visitor(site.servers[1], "203.0.113.21")

    status, _, _ = visitor.submit("/accounts/password/reset/", {"email": address})

    assert status == 302
    link = site.mailbox.link(address, count=2)
    assert link.startswith("/accounts/password/reset/key/")
    # Neither the link nor its key rests in clear in the tasks' table (the admin's Task results,
    # a backup): the worker had it encrypted.
    tasks = "from django_tasks_db.models import DBTaskResult as T; print(list(T.objects.values()))"
    completed = site.project.manage("shell", "-c", tasks)
    assert completed.returncode == 0, completed.stdout
    assert "send_email" in completed.stdout
    assert link not in completed.stdout
    assert link.strip("/").rsplit("-", 1)[-1] not in completed.stdout
    status, form_page, _ = visitor.get(link)  # The key goes to the session, out of the URL.
    assert status == 302
    form = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    assert visitor.submit(form_page, form)[0] == 302
    assert visitor.log_in(name, PASSWORD)[0] == 200
    assert visitor.log_in(name, NEW_PASSWORD)[:2] == (302, "/")
    assert visitor.signed_in_as() == name
    assert site.problems() == []


def test_failed_logins_are_refused_past_the_limit_by_both_processes(site):
    name = signed_up(site, Visitor(site.servers[0], "203.0.113.30"))
    first, second = (Visitor(server, "203.0.113.31") for server in site.servers)

    # One account: 5 failures in 5 minutes, half of them on each process.
    for attempt in range(5):
        assert (first, second)[attempt % 2].log_in(name, "wrong")[0] == 200
    for visitor in (first, second):
        status, _, page = visitor.log_in(name)  # The right password, too late.
        assert status == 429 and "Too many attempts" in page

    # One guesser, many accounts: past 10 failures a minute, every attempt is refused.
    guesser = [Visitor(server, "203.0.113.32") for server in site.servers]
    statuses = [guesser[n % 2].log_in(f"nobody{n}", "wrong")[0] for n in range(40)]
    assert statuses == [200] * 10 + [429] * 30
    # Other clients are not held up.
    assert Visitor(site.servers[1], "203.0.113.33").log_in("nobody", "wrong")[0] == 200
    assert site.problems() == []


def test_staff_reach_the_admin_through_the_site_login_and_its_limits(site):
    visitor = Visitor(site.servers[0], "203.0.113.50")
    # The admin's login page hands over to the site's, which brings the visitor back.
    assert visitor.get("/admin/")[:2] == (302, "/admin/login/?next=/admin/")
    assert visitor.get("/admin/login/?next=/admin/")[:2] == (302, ADMIN_LOGIN)

    # Signed in, not staff: 403.
    name = signed_up(site, visitor)
    assert visitor.log_in(name, page=ADMIN_LOGIN)[:2] == (302, "/admin/")
    assert visitor.get("/admin/")[:2] == (302, "/admin/login/?next=/admin/")
    assert visitor.get("/admin/login/?next=/admin/")[0] == 403
    # Staff: the admin.
    make_staff = f"from users.models import User; User.objects.filter(username={name!r})"
    completed = site.project.manage("shell", "-c", make_staff + ".update(is_staff=True)")
    assert completed.returncode == 0, completed.stdout
    status, _, page = visitor.get("/admin/")
    assert status == 200 and "Site administration" in page

    # Guessing the staff account's password on the admin's way in: the site's limits, across
    # both processes.
    first, second = (Visitor(server, "203.0.113.51") for server in site.servers)
    for attempt in range(5):
        assert (first, second)[attempt % 2].log_in(name, "wrong", page=ADMIN_LOGIN)[0] == 200
    for guesser in (first, second):
        status, _, page = guesser.log_in(name, page=ADMIN_LOGIN)
        assert status == 429 and "Too many attempts" in page
        assert guesser.get("/admin/")[:2] == (302, "/admin/login/?next=/admin/")
    assert site.problems() == []


@pytest.mark.parametrize("process", [0, 1])
def test_only_signed_in_users_join_a_room(site, process):
    server = site.servers[process]
    with websocket(server) as anonymous:
        with pytest.raises(ConnectionClosed) as closed:
            anonymous.recv(timeout=10)
    assert closed.value.rcvd.code == 4401

    visitor = Visitor(server, f"203.0.113.4{process}")
    name = signed_up(site, visitor)
    assert visitor.log_in(name)[0] == 302
    cookie = {"Cookie": f"sessionid={visitor.cookies['sessionid']}"}
    with websocket(server, headers=cookie) as member:
        member.send('{"message": "hello"}')
        assert json.loads(member.recv(timeout=10)) == {"message": "hello", "user": name}
    assert site.problems() == []


def totp(secret):
    """An authenticator app's code for `secret` (RFC 6238 with allauth's defaults: SHA-1, 30 s,
    6 digits), from a period with 3 s or more left, for the server to see the same one."""
    if time.time() % 30 > 27:
        time.sleep(30 - time.time() % 30)
    counter = struct.pack(">Q", int(time.time() // 30))
    digest = hmac.new(base64.b32decode(secret), counter, "sha1").digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**6:06d}"


@contextlib.contextmanager
def signed_up_in_a_browser(site, browser, name):
    """A browser of its own that signed up as `name`, followed the link of the verification
    email and signed in: its page and the site's URL. The pages must log no error on the
    console."""
    url = f"http://localhost:{site.servers[0].port}"
    context = browser.new_context(extra_http_headers=HTTPS)
    errors = []
    violations = policy_violations(context)
    try:
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))

        fill_in_sign_up(page, url, name, PASSWORD)
        expect(page).to_have_url(f"{url}/accounts/confirm-email/")
        page.goto(url + site.mailbox.link(f"{name}@example.com"))
        page.click("main form button[type=submit]")
        log_in_in_a_browser(page, url, name)
        expect(page.locator("#username")).to_have_text(name)
        yield page, url
    finally:
        context.close()
    assert errors == []
    assert violations == []


def log_in_in_a_browser(page, url, name):
    page.goto(f"{url}/accounts/login/")
    page.fill("#id_login", name)
    page.fill("#id_password", PASSWORD)
    page.click("main form button[type=submit]")


def log_out_in_a_browser(page):
    page.click("nav button[type=submit]")
    expect(page.locator("nav")).to_contain_text("Log in")


@only_when(lambda answers: answers["server"] in ("uvicorn", "granian"))
def test_a_browser_signs_up_and_signs_in_with_a_passkey(site, browser, tmp_path):
    name = site.new_name()
    with signed_up_in_a_browser(site, browser, name) as (page, url):
        devtools = page.context.new_cdp_session(page)
        devtools.send("WebAuthn.enable")
        options = {
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }
        authenticator = devtools.send("WebAuthn.addVirtualAuthenticator", {"options": options})

        # A passkey, from the account page; the password is asked for again first.
        page.goto(f"{url}/accounts/2fa/webauthn/add/")
        page.fill("#id_password", PASSWORD)
        page.click("main form button[type=submit]")
        page.fill("#id_name", "this laptop")
        page.check("#id_passwordless")
        page.click("#mfa_webauthn_add")
        expect(page).not_to_have_url(f"{url}/accounts/2fa/webauthn/add/")
        credentials = devtools.send("WebAuthn.getCredentials", authenticator)["credentials"]
        assert len(credentials) == 1 and credentials[0]["isResidentCredential"]

        log_out_in_a_browser(page)
        page.goto(f"{url}/accounts/login/")
        page.click("#passkey_login")
        expect(page.locator("#username")).to_have_text(name)
        page.screenshot(path=tmp_path / "signed-in-with-a-passkey.png")
    assert site.problems() == []


@only_when(lambda answers: answers["server"] in ("uvicorn", "granian"))
def test_a_browser_enrols_an_authenticator_app_then_signs_in_with_its_codes(site, browser):
    name = site.new_name()
    with signed_up_in_a_browser(site, browser, name) as (page, url):
        # From the account page: the password again, then the app's secret and one of its codes.
        page.goto(f"{url}/accounts/2fa/")
        page.click("main a[href='/accounts/2fa/totp/activate/']")
        page.fill("#id_password", PASSWORD)
        page.click("main form button[type=submit]")
        expect(page).to_have_url(f"{url}/accounts/2fa/totp/activate/")
        secret = page.input_value("#authenticator_secret")
        page.fill("#id_code", totp(secret))
        page.click("main form button[type=submit]")
        expect(page).to_have_url(f"{url}/accounts/2fa/recovery-codes/")
        recovery_codes = page.input_value("#recovery_codes").split()
        assert len(recovery_codes) == 10
        log_out_in_a_browser(page)

        # The password alone no longer signs in: a code from the app does.
        log_in_in_a_browser(page, url, name)
        expect(page).to_have_url(f"{url}/accounts/2fa/authenticate/")
        expect(page.locator("#username")).to_have_count(0)
        page.fill("#id_code", totp(secret))
        page.click("main form button[type=submit]")
        expect(page.locator("#username")).to_have_text(name)
        log_out_in_a_browser(page)

        # Without the app: a recovery code.
        log_in_in_a_browser(page, url, name)
        expect(page).to_have_url(f"{url}/accounts/2fa/authenticate/")
        page.fill("#id_code", recovery_codes[0])
        page.click("main form button[type=submit]")
        expect(page.locator("#username")).to_have_text(name)
    assert site.problems() == []
