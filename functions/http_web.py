"""HTTP function: the web interface (home, send form, a user's notifications and preferences,
dashboard).

Pages are rendered from templates/ with the service called in-process; their scripts poll the
JSON API (`/notifications/<id>`, `/users/<id>/notifications`, `/stats`) and the dashboard's
own `/dashboard/activity` for live updates.
"""

import re

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework

from common import web_inbox_demo, web_send_templates, web_templates
from common.auth.rules import OPEN
from common.errors import (
    Forbidden,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from common.http import SESSION_COOKIE, Router, client_address, json_response
from common.model import user_id_problem
from common.runtime import current_settings, get_access, get_service, require_valid_settings
from common.web import (
    error_page,
    local_path,
    page,
    read_form,
    redirect,
    refused_page,
    render,
    share_static_folder,
    static_file,
    too_large_page,
    user_url,
    verify_csrf,
)
from common.web_dashboard import dashboard_data
from common.web_forms import TYPE_CHOICES, SendForm
from common.web_listing import ListingQuery, not_a_user_id_page, post_to_user_page, render_user_page
from common.web_stats import stats_view

require_valid_settings(accepts_notifications=True)
share_static_folder()
router = Router(
    not_found=lambda: error_page(404, "Not found", "There is no page here."),
    too_large=too_large_page,
    refused=refused_page,
    sessions=True,
)


def _verify_csrf(request) -> None:
    verify_csrf(request)


def _login_page(request, status=200, error=None, next_path="/", retry_after=None):
    response = render(request, "login.html", status, error=error, next_path=next_path)
    if retry_after:
        response.headers["Retry-After"] = retry_after
    return response


@router.route("/login", methods=("GET", "POST"), access=OPEN)
@page
def login(request):
    next_path = local_path(request.values.get("next"))
    if request.method == "GET":
        return _login_page(request, next_path=next_path)
    posted = read_form(request)
    _verify_csrf(request)
    try:
        cookie, _ = get_access().log_in(posted.get("api_key", ""), client_address(request))
    except (Unauthorized, Forbidden, TooManyRequests) as error:
        retry_after = getattr(error, "headers", {}).get("Retry-After")
        return _login_page(request, error.http_status, error.message, next_path, retry_after)
    response = redirect(next_path)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(current_settings().session_seconds),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    return response


@router.route("/logout", methods=("POST",), access=OPEN)
@page
def logout(request):
    read_form(request)
    _verify_csrf(request)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@router.route("/", methods=("GET",))
@page
def home(request):
    service = get_service()
    return render(
        request,
        "home.html",
        active="home",
        stats=stats_view(service.stats()),
        retry_schedule=service.settings.retry_schedule,
    )


def _send_page(request, form: SendForm, status: int = 200, sent=None, duplicate=False):
    return render(
        request,
        "send.html",
        status,
        active="send",
        form=form,
        type_choices=TYPE_CHOICES,
        templates=web_send_templates.send_choices(),
        sent=sent.to_dict() if sent else None,
        duplicate=duplicate,
    )


@router.route("/send-notification", methods=("GET", "POST"))
@page
def send_notification(request):
    if request.method == "GET":
        sent_id = request.args.get("sent")
        sent = get_service().get(sent_id) if sent_id else None
        prefill = {"user_id": sent.user_id, "type": sent.notification_type} if sent else None
        form = SendForm.blank(prefill or request.args)
        return _send_page(request, form, sent=sent, duplicate=bool(request.args.get("duplicate")))
    posted = read_form(request)  # bounded before the CSRF check parses it
    _verify_csrf(request)
    form = SendForm.from_post(posted)
    if form.has_errors:
        return _send_page(request, form, 400)
    try:
        payload = web_send_templates.template_payload(form, web_send_templates.send_choices())
        sent = get_service().submit(payload, idempotency_key=form.submission_key)
    except ValidationError as error:
        return _send_page(request, form.with_errors(error.fields, error.message), 400)
    except Unavailable as error:  # keep what was typed: sending again later may work
        return _send_page(request, form.with_form_error(error.message), 503)
    return redirect(f"/send-notification?sent={sent.id}{'&duplicate=1' if sent.duplicate else ''}")


@router.route("/users", methods=("GET",))
@page
def find_user(request):
    if "user_id" not in request.args:
        return render(request, "users.html", active="users", error=None, typed="")
    typed = request.args["user_id"].strip()
    problem = user_id_problem(typed)
    if problem is None:
        return redirect(user_url(typed))
    error = f"A user id {problem}" if typed else "Enter a user id"
    return render(request, "users.html", 400, active="users", error=error, typed=typed[:500])


@router.route("/users/<user_id>", methods=("GET", "POST"))
@page
def user_notifications(request, user_id):
    invalid = not_a_user_id_page(user_id)
    if invalid is not None:
        return invalid
    query = ListingQuery.from_args(request.args)
    if request.method == "GET":
        return render_user_page(request, user_id, query)
    posted = read_form(request)
    _verify_csrf(request)
    return post_to_user_page(request, user_id, query, posted)  # retry, cancel or preferences


@router.route("/dashboard", methods=("GET",))
@page
def dashboard(request):
    service = get_service()
    return render(
        request,
        "dashboard.html",
        active="dashboard",
        stats=stats_view(service.stats()),
        **dashboard_data(service, service.clock()),
    )


@router.route("/dashboard/activity", methods=("GET",))
@page
def dashboard_activity(request):
    """The dashboard's live data (JSON): the last hour's chart, receipts and webhook health."""
    service = get_service()
    return json_response(dashboard_data(service, service.clock()))


@router.route("/message-templates", methods=("GET",))
@page
def message_templates(request):
    return web_templates.render_list(request, notice=request.args.get("archived"))


@router.route("/message-templates/new", methods=("GET", "POST"))
@page
def new_message_template(request):
    if request.method == "GET":
        return web_templates.render_editor(request, web_templates.TemplateForm.blank())
    posted = read_form(request)
    _verify_csrf(request)
    return web_templates.create(request, posted)


@router.route("/message-templates/new/preview", methods=("POST",))
@router.route("/message-templates/<key>/preview", methods=("POST",))
@page
def message_template_preview(request, key=None):
    """The editor's live preview: the form as typed, rendered and not saved (JSON)."""
    posted = read_form(request)
    _verify_csrf(request)
    return web_templates.preview_json(posted, key)


@router.route("/message-templates/<key>", methods=("GET", "POST"))
@page
def message_template(request, key):
    if request.method == "GET":
        saved = request.args.get("saved")
        notice = (
            f"Saved as version {saved}." if saved and re.fullmatch(r"[0-9]{1,7}", saved) else None
        )
        return web_templates.show(request, key, request.args.get("version"), notice)
    posted = read_form(request)
    _verify_csrf(request)
    return web_templates.update(request, key, posted)


@router.route("/inbox/demo", methods=("GET", "POST"))
@page
def inbox_demo(request):
    """The embeddable `<notify-inbox>` live for one user, and a form that sends it a test."""
    if request.method == "GET":
        return web_inbox_demo.render_demo(request, request.args.get("user_id", "").strip())
    posted = read_form(request)
    _verify_csrf(request)
    return web_inbox_demo.send_test(request, posted)


@router.route("/static/<path:name>", methods=("GET",), access=OPEN)
def static(request, name):
    return static_file(name)


@functions_framework.http
def http_web(request):
    return router.dispatch(request)
