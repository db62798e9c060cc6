"""The web pages through `http_web`'s own Flask app (functions-framework's `create_app`), with
the service injected: CSRF, escaping, errors beside fields, the idempotent double submit,
filters and paging, the manual retry without script, and no external resource anywhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import flask
import functions_framework
import pytest

from common import web_csrf
from common.channels import make_channels
from common.model import FAILED_PERMANENTLY
from common.queue.memory import MemoryQueue
from common.runtime import set_service
from common.service import NotificationService
from common.store.sqlite import SqliteStore
from tests.support.auth import ADMIN_HEADERS, ADMIN_KEY, auth_test_client
from tests.support.runner import free_port
from tests.support.states import make_failed, make_sent

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("/", "/send-notification", "/users", "/users/alice", "/dashboard")


class UnknownDepthQueue(MemoryQueue):
    def depths(self, timeout=None):
        return None


def make_service(settings, queue=None) -> NotificationService:
    store = SqliteStore(settings.data_dir / "notifications.db")
    return NotificationService(settings, store, queue or MemoryQueue(), make_channels(settings))


@pytest.fixture
def service(settings):
    service = make_service(settings)
    set_service(service)
    yield service
    set_service(None)
    service.store.close()


@pytest.fixture(scope="module")
def app():
    return functions_framework.create_app("http_web", str(ROOT / "functions" / "http_web.py"))


@pytest.fixture
def client(app, service):
    return auth_test_client(app)


def form_fields(html: str) -> dict[str, str]:
    """The hidden fields of the send form (csrf_token, submission_key)."""
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def send(client, **fields):
    """GET the form (cookie and keys), then POST it with `fields`."""
    hidden = form_fields(client.get("/send-notification").text)
    data = {"user_id": "alice", "notification_type": "in_app", "message": "hello", **hidden}
    data.update(fields)
    return client.post("/send-notification", data=data)


def count(service, user_id="alice") -> int:
    return len(service.list_for_user(user_id).items)


# -- every page -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_the_nav_and_safe_headers(client, path):
    reply = client.get(path)
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    for link in ('href="/"', 'href="/send-notification"', 'href="/users"', 'href="/dashboard"'):
        assert link in reply.text
    assert 'aria-current="page"' in reply.text
    policy = reply.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{web_csrf.COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_home_says_what_the_service_is_and_shows_live_counts(client, service):
    for index in range(3):
        service.submit({"user_id": f"u{index}", "notification_type": "in_app", "message": "x"})
    html = client.get("/").text
    assert "Email, SMS and in-app notifications" in html
    assert re.search(r'data-stat="total">3<', html)
    assert 'data-source="/stats"' in html
    assert "30 s, 2 min, 10 min, 30 min, 1 h" not in html  # the test schedule is shown instead
    assert "0.2 s" in html


def test_every_field_of_the_send_form_has_a_label(client):
    html = client.get("/send-notification").text
    ids = re.findall(r'<(?:input|textarea|select) id="([^"]+)"', html)
    assert {"f-user_id", "f-email", "f-subject", "f-phone", "f-message"} <= set(ids)
    for element_id in ids:
        assert f'for="{element_id}"' in html, f"no label for #{element_id}"
    assert "<legend>Type</legend>" in html


def test_no_page_or_asset_loads_anything_from_elsewhere():
    external = re.compile(r"""(?:src|href|url\()\s*=?\s*["']?(?:https?:)?//""", re.I)
    files = [*ROOT.joinpath("templates").rglob("*.html"), *ROOT.joinpath("templates").rglob("*.*")]
    for path in {p for p in files if p.suffix in {".html", ".css", ".js", ".svg"}}:
        text = path.read_text()
        assert not external.search(text), f"{path.name} refers to an external resource"
        assert "@import" not in text and "fonts.googleapis" not in text


def test_static_files_are_served_and_nothing_else(client):
    css = client.get("/static/app.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert client.get("/static/app.js").mimetype in {"text/javascript", "application/javascript"}
    assert client.get("/static/missing.css").status_code == 404
    assert client.get("/static/../common/web.py").status_code == 404
    assert client.get("/static/sub/../../functions/http_web.py").status_code == 404


# -- CSRF -----------------------------------------------------------------------------------


def test_a_post_without_the_token_is_refused_with_a_readable_page(client, service):
    client.get("/send-notification")  # the cookie is set; the form's token is not sent
    reply = client.post(
        "/send-notification",
        data={"user_id": "alice", "notification_type": "in_app", "message": "hi"},
    )
    assert reply.status_code == 403 and reply.mimetype == "text/html"
    assert "This form has expired" in reply.text and "Nothing was sent" in reply.text
    assert count(service) == 0


@pytest.mark.parametrize("tamper", ["no_cookie", "other_cookie", "bad_signature", "foreign_key"])
def test_a_token_that_does_not_match_is_refused(app, client, service, tamper):
    hidden = form_fields(client.get("/send-notification").text)
    value, _, signature = hidden["csrf_token"].partition(".")
    if tamper == "no_cookie":
        client.delete_cookie(web_csrf.COOKIE_NAME)
    elif tamper == "other_cookie":
        client.set_cookie(web_csrf.COOKIE_NAME, "A" * 43)
    elif tamper == "bad_signature":
        hidden["csrf_token"] = f"{value}.{'0' * len(signature)}"
    else:  # a token signed with another key, for a value the attacker chose and set
        client.set_cookie(web_csrf.COOKIE_NAME, "B" * 43)
        hidden["csrf_token"] = web_csrf.form_token("B" * 43, "someone else's secret")
    reply = client.post(
        "/send-notification",
        data={**hidden, "user_id": "alice", "notification_type": "in_app", "message": "hi"},
    )
    assert reply.status_code == 403
    assert count(service) == 0


def test_csrf_secret_signs_tokens_that_any_process_with_it_accepts(settings):
    token = web_csrf.form_token("v" * 43, "shared secret")
    app = flask.Flask(__name__)
    with app.test_request_context("/", method="POST", data={"csrf_token": token}):
        web_csrf.verify(flask.request, "v" * 43, "shared secret", 60)  # another process, same key
        with pytest.raises(web_csrf.CsrfRejected):
            web_csrf.verify(flask.request, "v" * 43, "another secret", 60)
        with pytest.raises(web_csrf.CsrfRejected):
            web_csrf.verify(flask.request, "w" * 43, "shared secret", 60)  # another browser


def test_the_cookie_is_reused_so_that_two_open_forms_both_work(client, service):
    first = form_fields(client.get("/send-notification").text)
    second = form_fields(client.get("/send-notification").text)
    for hidden, message in ((first, "one"), (second, "two")):
        data = {**hidden, "user_id": "alice", "notification_type": "in_app", "message": message}
        assert client.post("/send-notification", data=data).status_code == 303
    assert count(service) == 2


# -- sending --------------------------------------------------------------------------------


def test_a_valid_form_redirects_to_its_result(client, service):
    reply = send(client, message="Your parcel is on its way")
    assert reply.status_code == 303
    location = reply.headers["Location"]
    notification_id = re.fullmatch(r"/send-notification\?sent=([\w-]+)", location).group(1)
    stored = service.get(notification_id)
    assert stored.message == "Your parcel is on its way" and stored.user_id == "alice"
    page = client.get(location).text
    assert notification_id in page and "Notification accepted" in page
    assert f'data-source="/notifications/{notification_id}"' in page  # polled for live status
    assert re.search(r'role="status" aria-live="polite"', page)
    assert 'data-status="queued"' in page


def test_the_same_form_posted_twice_sends_once(client, service):
    hidden = form_fields(client.get("/send-notification").text)
    data = {**hidden, "user_id": "alice", "notification_type": "in_app", "message": "once"}
    first = client.post("/send-notification", data=data)
    second = client.post("/send-notification", data=data)
    assert first.status_code == second.status_code == 303
    assert second.headers["Location"] == first.headers["Location"] + "&duplicate=1"
    assert count(service) == 1
    assert service.queue.depths()["messages"] == 1  # queued once, not twice
    assert "sent only once" in client.get(second.headers["Location"]).text


def test_each_form_gets_a_new_submission_key(client):
    keys = {form_fields(client.get("/send-notification").text)["submission_key"] for _ in "ab"}
    assert len(keys) == 2


def test_a_bad_email_is_shown_beside_the_field_and_nothing_is_stored(client, service):
    reply = send(client, notification_type="email", email="not-an-email", message="kept text")
    assert reply.status_code == 400
    field = re.search(r'<div class="field has-error only-email".*?</div>', reply.text, re.S)
    assert field and 'id="f-email"' in field.group(0)
    assert "Email address must be a valid email address" in field.group(0)
    assert 'aria-invalid="true"' in field.group(0) and 'value="not-an-email"' in field.group(0)
    assert ">kept text</textarea>" in reply.text
    assert 'value="email" checked' in reply.text
    assert count(service) == 0


def test_every_missing_field_is_named(client, service):
    reply = send(client, user_id="", message="", notification_type="sms", phone="")
    assert reply.status_code == 400
    for text in ("User id is required", "Message is required", "Phone number is required"):
        assert text in reply.text
    assert "3 things to fix" in reply.text
    assert count(service, "") == 0


def test_fields_of_other_types_are_ignored(client, service):
    reply = send(client, notification_type="in_app", email="not-an-email", phone="nope")
    assert reply.status_code == 303
    stored = service.list_for_user("alice").items[0]
    assert stored.email is None and stored.phone is None


def test_a_form_without_its_submission_key_sends_nothing(client, service):
    hidden = form_fields(client.get("/send-notification").text)
    del hidden["submission_key"]
    data = {**hidden, "user_id": "alice", "notification_type": "in_app", "message": "hi"}
    reply = client.post("/send-notification", data=data)
    assert reply.status_code == 400 and "out of date" in reply.text
    assert form_fields(reply.text)["submission_key"]  # a fresh one to send again with
    assert count(service) == 0


def test_a_store_outage_keeps_what_was_typed(client, service, monkeypatch):
    def down(notification):
        raise OSError("disk on fire")

    monkeypatch.setattr(service.store, "add", down)
    reply = send(client, message="please keep me")
    assert reply.status_code == 503
    assert "store is unavailable" in reply.text and ">please keep me</textarea>" in reply.text


def test_the_form_can_be_prefilled_from_a_link(client):
    html = client.get("/send-notification?user_id=bob&type=sms").text
    assert 'value="bob"' in html and 'value="sms" checked' in html


def test_an_unknown_result_id_is_a_readable_404(client):
    reply = client.get("/send-notification?sent=does-not-exist")
    assert reply.status_code == 404 and "Not found" in reply.text


# -- escaping -------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"


def test_what_was_typed_is_escaped_when_the_form_comes_back(client):
    reply = send(client, notification_type="email", email=SCRIPT, message=SCRIPT, subject=SCRIPT)
    assert reply.status_code == 400
    assert SCRIPT not in reply.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.text


def test_a_stored_message_is_escaped_on_every_page(client):
    location = send(client, message=SCRIPT).headers["Location"]
    for path in (location, "/users/alice"):
        html = client.get(path).text
        assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_user_id_in_the_address_is_escaped(client):
    html = client.get("/users/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E").text
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


# -- a user's notifications -------------------------------------------------------------------


def test_users_finds_a_user_by_id(client):
    assert client.get("/users?user_id=alice").headers["Location"] == "/users/alice"
    empty = client.get("/users?user_id=+")
    assert empty.status_code == 400 and "Enter a user id" in empty.text


def test_a_users_page_lists_newest_first_with_status_and_retries(client, service):
    for text in ("first", "second", "third"):
        service.submit({"user_id": "alice", "notification_type": "in_app", "message": text})
        time.sleep(0.002)  # times are kept to the millisecond
    service.submit({"user_id": "bob", "notification_type": "in_app", "message": "not alice's"})
    html = client.get("/users/alice").text
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    assert [m for m in re.findall(r'data-field="message">(\w+)<', body)] == [
        "third",
        "second",
        "first",
    ]
    assert "not alice" not in html
    assert body.count('data-field="retry_count">0 of 5<') == 3
    assert 'data-source="/users/alice/notifications?limit=20&amp;archived=all"' in html


def test_a_users_page_filters_and_pages_like_the_api(client, service):
    for index in range(5):
        service.submit({"user_id": "alice", "notification_type": "in_app", "message": f"m{index}"})
        time.sleep(0.002)  # times are kept to the millisecond
    service.submit(
        {"user_id": "alice", "notification_type": "sms", "phone": "+14155550123", "message": "t"}
    )
    sms_only = client.get("/users/alice?type=sms").text
    assert sms_only.count('<tr data-id="') - 1 == 1  # one row, plus the row <template>
    first = client.get("/users/alice?type=in_app&limit=2").text
    next_url = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert "cursor=" in next_url and "type=in_app" in next_url and "limit=2" in next_url
    second = client.get(next_url).text
    rows = re.findall(r'data-field="message">(m\d)<', first + second)
    assert rows == ["m4", "m3", "m2", "m1"]
    assert "← Newest" in second


def test_a_bad_filter_is_explained(client):
    reply = client.get("/users/alice?status=lost")
    assert reply.status_code == 400 and "Status must be one of" in reply.text
    broken = client.get("/users/alice?cursor=nonsense")
    assert broken.status_code == 400 and "Start from the newest" in broken.text


def _failed(service, user_id="alice"):
    notification = service.submit(
        {"user_id": user_id, "notification_type": "in_app", "message": "x"}
    )
    make_failed(service.store, notification.id, "mailbox <full>", retries=5)
    return notification.id


def _retry(client, user_id, notification_id, token=True):
    page = client.get(f"/users/{user_id}").text
    data = {"notification_id": notification_id}
    if token:
        data["csrf_token"] = form_fields(page)["csrf_token"]
    return client.post(f"/users/{user_id}?status=failed_permanently", data=data)


def test_a_failed_row_has_a_retry_button_that_works_without_script(client, service):
    failed = _failed(service)
    html = client.get("/users/alice").text
    row = re.search(rf'<tr data-id="{failed}".*?</tr>', html, re.S).group(0)
    assert "<form" in row and " hidden" not in row.split("<form")[1].split(">")[0]
    assert "mailbox &lt;full&gt;" in row and "5 of 5" in row
    reply = _retry(client, "alice", failed)
    assert reply.status_code == 303
    assert reply.headers["Location"] == f"/users/alice?status=failed_permanently&retried={failed}"
    assert service.get(failed).status == "queued" and service.get(failed).retry_count == 0
    assert "was queued again" in client.get(reply.headers["Location"]).text


def test_a_retry_that_is_not_allowed_says_why(client, service):
    sent = service.submit({"user_id": "alice", "notification_type": "in_app", "message": "x"})
    make_sent(service.store, sent.id)
    reply = _retry(client, "alice", sent.id)
    assert reply.status_code == 409 and "already sent" in reply.text


def test_a_retry_needs_the_token_and_the_right_user(client, service):
    failed = _failed(service)
    assert _retry(client, "alice", failed, token=False).status_code == 403
    assert _retry(client, "bob", failed).status_code == 404
    assert service.get(failed).status == FAILED_PERMANENTLY


# -- dashboard ------------------------------------------------------------------------------


def test_the_dashboard_shows_counts_by_status_and_type_and_the_queue(client, service):
    service.submit({"user_id": "a", "notification_type": "in_app", "message": "x"})
    service.submit(
        {"user_id": "a", "notification_type": "sms", "phone": "+14155550123", "message": "x"}
    )
    html = client.get("/dashboard").text
    assert re.search(r'data-stat="by_status.queued">2<', html)
    assert re.search(r'data-stat="by_type.sms">1<', html)
    assert re.search(r'data-stat="queue.messages">2<', html)
    assert re.search(r'data-bar="by_status.queued" width="100.0"', html)


def test_the_dashboard_says_when_the_queue_depth_is_unknown(app, settings):
    service = make_service(settings, UnknownDepthQueue())
    set_service(service)
    try:
        html = auth_test_client(app).get("/dashboard").text
    finally:
        set_service(None)
        service.store.close()
    assert "The queue depth is not known" in html
    assert re.search(r"data-queue-known hidden", html)


# -- deployed alone ---------------------------------------------------------------------------


def test_http_web_runs_alone_under_the_stock_functions_framework_cli(tmp_path, rabbit_url):
    """As a FaaS platform runs it: `functions-framework --source ... --target http_web`, with
    the broker every deployed function that queues work needs."""
    cli = Path(sys.executable).with_name("functions-framework")
    cli = (
        cli if cli.exists() else Path(shutil.which("functions-framework") or "functions-framework")
    )
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATA_DIR": str(tmp_path),
        "ENV_FILE": os.devnull,
        "RABBITMQ_URL": rabbit_url,
        "ADMIN_API_KEY": ADMIN_KEY,
    }
    process = subprocess.Popen(
        [str(cli), "--source", "functions/http_web.py", "--target", "http_web"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                home = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=ADMIN_HEADERS)
                with urllib.request.urlopen(home, timeout=1) as reply:
                    assert reply.status == 200 and b"Notify" in reply.read()
                break
            except OSError:
                assert time.monotonic() < deadline, "http_web did not start"
                time.sleep(0.2)
        css = urllib.request.Request(
            f"http://127.0.0.1:{port}/static/app.css", headers=ADMIN_HEADERS
        )
        with urllib.request.urlopen(css) as reply:
            assert reply.status == 200
    finally:
        process.terminate()
        process.wait(20)


# -- user ids no notification can have -----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/users/two%20words", "may contain only letters, digits and . _ : @ + -"),
        ("/users/" + "u" * 129, "must be at most 128 characters"),
    ],
)
def test_an_impossible_user_id_is_a_400_page_naming_the_problem(client, path, problem):
    reply = client.get(path)
    assert reply.status_code == 400 and reply.mimetype == "text/html"
    assert "Not a user id" in reply.text and problem in reply.text
    assert "<tbody>" not in reply.text  # no listing, not even an empty one
    assert reply.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_a_retry_posted_to_an_impossible_user_id_is_a_400_and_changes_nothing(client, service):
    failed = _failed(service)
    token = form_fields(client.get("/users/alice").text)["csrf_token"]
    data = {"notification_id": failed, "csrf_token": token}
    reply = client.post("/users/al%20ice", data=data)
    assert reply.status_code == 400 and "Not a user id" in reply.text
    assert service.get(failed).status == FAILED_PERMANENTLY


def test_looking_up_an_impossible_user_id_says_why_beside_the_field(client):
    reply = client.get("/users?user_id=two+words")
    assert reply.status_code == 400 and "Location" not in reply.headers
    assert "A user id may contain only letters, digits and . _ : @ + -" in reply.text
    assert 'value="two words"' in reply.text  # what was typed is kept
    assert client.get("/users?user_id=+ann@x.org+").headers["Location"] == "/users/ann@x.org"


# -- hardened input: error pages carry the headers, forms are bounded ----------------------------


def test_every_error_page_carries_the_security_headers(client):
    from common.web import SECURITY_HEADERS

    for path in ("/no-such-page", "/static/nothing.css", "/users/%0A", "/a%0Ab"):
        reply = client.get(path)
        assert reply.status_code in (400, 404) and reply.mimetype == "text/html", path
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers.get(name) == value, (path, name)


def test_a_form_with_too_many_fields_is_a_400_page_and_sends_nothing(client, service):
    hidden = form_fields(client.get("/send-notification").text)
    data = {"user_id": "alice", "notification_type": "in_app", "message": "hi", **hidden}
    data.update({f"extra{i}": "x" for i in range(150)})
    reply = client.post("/send-notification", data=data)
    assert reply.status_code == 400 and "more than 100 fields" in reply.text
    assert "Content-Security-Policy" in reply.headers
    multipart = {**data, "file": (__import__("io").BytesIO(b"x"), "f.txt")}
    reply = client.post("/send-notification", data=multipart)
    assert reply.status_code in (400, 413) and reply.mimetype == "text/html"
    assert count(service) == 0


def test_a_form_over_max_request_bytes_is_a_413_page(client, service):
    hidden = form_fields(client.get("/send-notification").text)
    data = {"user_id": "alice", "notification_type": "in_app", "message": "x" * 2_000_000}
    reply = client.post("/send-notification", data={**data, **hidden})
    assert reply.status_code == 413 and reply.mimetype == "text/html"
    assert "Content-Security-Policy" in reply.headers
    assert count(service) == 0
