"""Access control and abuse limits through the real runner (`python local_runner.py serve`):
what a new user meets at the quick start, what an operator does with `keys`, and the limits
that must hold across processes sharing one DATA_DIR and one RabbitMQ queue.

Every limit is checked against what the service stored (and delivered), not only its replies.
"""

from __future__ import annotations

import json
import re
import stat
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.auth import ADMIN_HEADERS
from tests.support.jwks import jwks_url_fixture, signing_key_fixture  # noqa: F401 (fixtures)
from tests.support.runner import ServiceUrl, run_command, running_service
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(120)

KEY_PATTERN = re.compile(r"^nsk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
TIMEOUT = 10.0


# -- helpers ----------------------------------------------------------------------------------


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def in_app(user_id: str, message: str = "hello") -> dict:
    return {"user_id": user_id, "notification_type": "in_app", "message": message}


def sms(user_id: str, phone: str, message: str = "your code is 1234") -> dict:
    return {"user_id": user_id, "notification_type": "sms", "message": message, "phone": phone}


def stored_for(base: str, user_id: str, **params: str) -> list[dict]:
    """Every notification the service stored for `user_id` (all pages), read as the admin."""
    items: list[dict] = []
    cursor = None
    while True:
        query = {"limit": "200", **params, **({"cursor": cursor} if cursor else {})}
        reply = requests.get(
            f"{base}/users/{user_id}/notifications",
            params=query,
            headers=ADMIN_HEADERS,
            timeout=TIMEOUT,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        items += body["notifications"]
        cursor = body["next_cursor"]
        if not cursor:
            return items


def keys_command(data_dir: Path, *args: str):
    """`python local_runner.py keys <args>` on `data_dir` (the runner's own settings)."""
    return run_command({"DATA_DIR": str(data_dir)}, "keys", *args)


def create_key(data_dir: Path, name: str, *scopes: str, extra: tuple[str, ...] = ()):
    """`keys create`: (key id, secret, the command's result)."""
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    result = keys_command(data_dir, "create", "--name", name, *scope_args, *extra)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    match = KEY_PATTERN.match(secret)
    assert match, f"`keys create` printed no key on stdout: {result.stdout!r}"
    assert len(result.stdout.strip().splitlines()) == 1, "stdout must hold the key alone"
    return match.group(1), secret, result


def key_rows(listing: str) -> list[str]:
    """The key lines of `keys list` (its header left out)."""
    return [line for line in listing.splitlines()[1:] if line.strip()]


def assert_one_readable_line(result, *words: str) -> None:
    """A refused CLI call: non-zero exit, one line naming the problem, no traceback, no key."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert not KEY_PATTERN.search(result.stdout.strip()), "a refused create printed a key"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def data_files(data_dir: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in data_dir.rglob("*") if path.is_file()}


# -- a runner shared by the tests that need nothing special -----------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[ServiceUrl, Path]:
    """A runner with the tests' ADMIN_API_KEY on the embedded defaults, and its DATA_DIR."""
    data_dir = tmp_path_factory.mktemp("access") / "data"
    with running_service({"DATA_DIR": str(data_dir)}) as base:
        yield base, data_dir


# -- 1. quick start -----------------------------------------------------------------------


def test_quick_start_creates_one_admin_key_file_that_works(tmp_path):
    data_dir = tmp_path / "data"
    env = {"DATA_DIR": str(data_dir), "ADMIN_API_KEY": None}
    key_file = data_dir / "admin.key"
    with running_service(env) as base:
        assert key_file.exists(), base.log()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert f"created an admin API key in {key_file} (mode 0600)" in base.log()
        secret = key_file.read_text().strip()
        assert KEY_PATTERN.match(secret), "admin.key holds no API key"
        assert secret not in base.log(), "the log shows the admin key itself"

        # The README's curl, with the key from the file.
        sent = requests.post(
            f"{base}/notifications", json=in_app("quick-1"), headers=bearer(secret), timeout=TIMEOUT
        )
        assert sent.status_code == 201, sent.text
        notification_id = sent.json()["id"]
        read = requests.get(
            f"{base}/notifications/{notification_id}", headers=bearer(secret), timeout=TIMEOUT
        )
        assert read.status_code == 200, read.text
        assert read.json()["message"] == "hello"
        listed = requests.get(
            f"{base}/users/quick-1/notifications", headers=bearer(secret), timeout=TIMEOUT
        )
        assert [n["id"] for n in listed.json()["notifications"]] == [notification_id]

        nobody = requests.post(f"{base}/notifications", json=in_app("quick-1"), timeout=TIMEOUT)
        assert nobody.status_code == 401, nobody.text
        assert nobody.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in nobody.json()

    with running_service(env) as again:
        assert "created an admin API key" not in again.log(), again.log()
        assert f"admin API key: {key_file}" in again.log()
        assert key_file.read_text().strip() == secret, "the restart replaced admin.key"
        still = requests.get(
            f"{again}/notifications/{notification_id}", headers=bearer(secret), timeout=TIMEOUT
        )
        assert still.status_code == 200, still.text
    listing = keys_command(data_dir, "list")
    assert listing.returncode == 0, listing.stderr
    rows = key_rows(listing.stdout)
    assert len(rows) == 1, listing.stdout
    assert "admin" in rows[0] and "active" in rows[0]
    assert secret not in listing.stdout + listing.stderr


# -- 2. the keys CLI against a running runner -----------------------------------------------


def test_keys_cli_create_list_revoke_against_a_running_runner(shared):
    base, data_dir = shared
    key_id, secret, created = create_key(data_dir, "billing backend", "send")
    assert f"id {key_id}" in created.stderr and "scopes send" in created.stderr
    assert "cannot be shown again" in created.stderr

    sent = requests.post(
        f"{base}/notifications", json=in_app("cli-user"), headers=bearer(secret), timeout=TIMEOUT
    )
    assert sent.status_code == 201, sent.text
    for path in ("/stats", "/users/cli-user/notifications", "/api-keys"):
        refused = requests.get(f"{base}{path}", headers=bearer(secret), timeout=TIMEOUT)
        assert refused.status_code == 403, f"{path}: {refused.status_code} {refused.text}"
        assert "scope" in refused.json()["error"]

    listing = keys_command(data_dir, "list")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in key_rows(listing.stdout) if line.startswith(key_id))
    assert "billing backend" in row and "send" in row and "active" in row, row
    assert "admin" not in row and "read" not in row, row
    random_part = KEY_PATTERN.match(secret).group(2)
    assert random_part not in listing.stdout + listing.stderr, "keys list showed the secret"

    # Only the hash is kept: neither the key nor its random part is anywhere in DATA_DIR
    # (access.db and its WAL included), nor in the runner's log.
    access_files = [path for path in data_files(data_dir) if path.name.startswith("access.db")]
    assert access_files, "no access.db in DATA_DIR"
    for path, content in data_files(data_dir).items():
        assert random_part.encode() not in content, f"the key's secret is in {path}"
    assert random_part not in base.log()

    revoked = keys_command(data_dir, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked {key_id}" in revoked.stdout
    after = requests.post(
        f"{base}/notifications", json=in_app("cli-user"), headers=bearer(secret), timeout=TIMEOUT
    )
    assert after.status_code == 401, after.text
    assert "revoked" in after.json()["error"]
    listing = keys_command(data_dir, "list")
    row = next(line for line in key_rows(listing.stdout) if line.startswith(key_id))
    assert "revoked" in row, row
    assert len(stored_for(base, "cli-user")) == 1


def test_keys_cli_refuses_bad_input_in_one_line(shared):
    _, data_dir = shared
    before = key_rows(keys_command(data_dir, "list").stdout)
    bad_scope = keys_command(data_dir, "create", "--name", "x", "--scope", "superuser")
    assert_one_readable_line(bad_scope, "scope", "superuser")
    bad_expiry = keys_command(
        data_dir, "create", "--name", "x", "--scope", "send", "--expires-in", "soon"
    )
    assert_one_readable_line(bad_expiry, "expires")
    unknown = keys_command(data_dir, "revoke", "nosuchkey123")
    assert_one_readable_line(unknown, "nosuchkey123")
    assert key_rows(keys_command(data_dir, "list").stdout) == before, "a refused create stored"


# -- 3. limits across two runners sharing DATA_DIR and the broker ---------------------------


@pytest.fixture
def shared_queue_env(tmp_path, rabbit_url, queue_names) -> dict[str, str]:
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "RABBITMQ_URL": rabbit_url,
        "QUEUE_NAME": queue_names[0],
        "DLQ_NAME": queue_names[1],
        "SWEEP_INTERVAL": "0.5",
    }


def hammer(bases: list[str], secret: str, user_id: str, seconds: float, callers: int = 4):
    """Send in_app notifications as fast as possible for `seconds`, each caller alternating
    between the runners: the replies, and the seconds from the first send to the last reply."""
    deadline = time.monotonic() + seconds

    def caller(number: int) -> list[requests.Response]:
        replies = []
        with requests.Session() as session:
            session.headers.update(bearer(secret))
            turn = number
            while time.monotonic() < deadline:
                base = bases[turn % len(bases)]
                turn += 1
                replies.append(
                    session.post(f"{base}/notifications", json=in_app(user_id), timeout=TIMEOUT)
                )
        return replies

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=callers) as pool:
        replies = [reply for chunk in pool.map(caller, range(callers)) for reply in chunk]
    return replies, time.monotonic() - started


@pytest.mark.rabbitmq
def test_send_rate_limit_holds_across_two_runners(shared_queue_env):
    env = {**shared_queue_env, "SEND_RATE_LIMIT": "5"}
    rate, burst = 5, 10
    data_dir = Path(env["DATA_DIR"])
    _, secret, _ = create_key(data_dir, "load", "send")
    with running_service(env) as first, running_service(env) as second:
        replies, elapsed = hammer([first, second], secret, "rate-user", seconds=3.0)
        statuses = Counter(reply.status_code for reply in replies)
        assert set(statuses) <= {201, 429}, statuses
        accepted = [reply for reply in replies if reply.status_code == 201]
        refused = [reply for reply in replies if reply.status_code == 429]
        most = burst + rate * elapsed + 1
        summary = f"{statuses} in {elapsed:.2f} s, at most {most:.1f} may pass"
        print(f"two runners, one key at SEND_RATE_LIMIT={rate}: {summary}")
        assert len(accepted) <= most, summary
        assert len(accepted) >= burst, summary  # the full bucket, at least
        assert refused, summary
        for base in (first, second):
            assert any(r.url.startswith(base) for r in accepted), f"{base} accepted none"
        for reply in accepted:
            assert reply.headers["RateLimit-Limit"] == str(burst)
        for reply in refused:
            assert int(reply.headers["Retry-After"]) >= 1, reply.headers
            assert reply.headers["RateLimit-Limit"] == str(burst)
            assert int(reply.headers["RateLimit-Remaining"]) >= 0
            assert int(reply.headers["RateLimit-Reset"]) >= 0
            assert "rate limit" in reply.json()["error"]

        stored = stored_for(first, "rate-user")
        assert sorted(n["id"] for n in stored) == sorted(r.json()["id"] for r in accepted)


@pytest.mark.rabbitmq
def test_sms_cap_per_recipient_holds_across_two_runners(shared_queue_env):
    env = {**shared_queue_env, "SEND_RATE_LIMIT": "0", "SMS_PER_RECIPIENT_PER_HOUR": "3"}
    number = "+14155550123"
    # The same number however it is written: formatting must not dodge the cap.
    spellings = [number, "+1 415 555 0123", "+1 (415) 555-0123"]
    with running_service(env) as first, running_service(env) as second:
        bases = [first, second]

        def send(index: int) -> requests.Response:
            return requests.post(
                f"{bases[index % 2]}/notifications",
                json=sms("sms-user", spellings[index % len(spellings)], f"code {index}"),
                headers=ADMIN_HEADERS,
                timeout=TIMEOUT,
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(pool.map(send, range(12)))
        statuses = Counter(reply.status_code for reply in replies)
        assert statuses == {201: 3, 429: 9}, statuses
        for reply in replies:
            if reply.status_code == 429:
                assert int(reply.headers["Retry-After"]) >= 1, reply.headers
                assert "SMS_PER_RECIPIENT_PER_HOUR" in reply.json()["error"]
                assert "RateLimit-Limit" not in reply.headers  # no rate limit is on

        # In a batch, the capped item alone is refused; another number still goes.
        batch = requests.post(
            f"{second}/notifications/batch",
            json={"notifications": [sms("sms-user", number), sms("sms-user", "+14155550199")]},
            headers=ADMIN_HEADERS,
            timeout=TIMEOUT,
        )
        assert batch.status_code == 201, batch.text
        body = batch.json()
        assert (body["accepted"], body["rejected"]) == (1, 1), body
        assert body["results"][0]["status"] == 429 and body["results"][0]["error"], body
        assert "id" in body["results"][1], body

        stored = [n for n in stored_for(first, "sms-user", type="sms") if n["phone"] == number]
        accepted_ids = sorted(r.json()["id"] for r in replies if r.status_code == 201)
        assert sorted(n["id"] for n in stored) == accepted_ids

        # ... and exactly those three reached the (local) SMS outbox.
        outbox = Path(env["DATA_DIR"]) / "outbox"

        def delivered() -> list[str]:
            records = [json.loads(p.read_text()) for p in outbox.glob("*.json")]
            return sorted(r["id"] for r in records if r["to"] == number)

        assert wait_for(lambda: delivered() == accepted_ids, 15), delivered()
        time.sleep(0.5)  # room for a stray fourth to show
        assert delivered() == accepted_ids


# -- 4. per-user tokens -----------------------------------------------------------------------


def test_user_token_reads_its_own_user_only(shared):
    base, _ = shared
    ids = {}
    for user in ("token-ann", "token-bob"):
        reply = requests.post(
            f"{base}/notifications", json=in_app(user), headers=ADMIN_HEADERS, timeout=TIMEOUT
        )
        assert reply.status_code == 201, reply.text
        ids[user] = reply.json()["id"]
    minted = requests.post(f"{base}/users/token-ann/token", headers=ADMIN_HEADERS, timeout=TIMEOUT)
    assert minted.status_code == 201, minted.text
    assert minted.json()["user_id"] == "token-ann" and minted.json()["expires_at"]
    token = bearer(minted.json()["token"])

    own = requests.get(f"{base}/users/token-ann/notifications", headers=token, timeout=TIMEOUT)
    assert own.status_code == 200, own.text
    assert [n["id"] for n in own.json()["notifications"]] == [ids["token-ann"]]
    one = requests.get(f"{base}/notifications/{ids['token-ann']}", headers=token, timeout=TIMEOUT)
    assert one.status_code == 200, one.text

    refused = {
        "another user's list": requests.get(
            f"{base}/users/token-bob/notifications", headers=token, timeout=TIMEOUT
        ),
        "another user's notification": requests.get(
            f"{base}/notifications/{ids['token-bob']}", headers=token, timeout=TIMEOUT
        ),
        "sending": requests.post(
            f"{base}/notifications", json=in_app("token-ann"), headers=token, timeout=TIMEOUT
        ),
        "the stats": requests.get(f"{base}/stats", headers=token, timeout=TIMEOUT),
    }
    for what, reply in refused.items():
        assert reply.status_code == 403, f"{what}: {reply.status_code} {reply.text}"
        assert "token-bob" not in reply.text, f"{what} leaked the other user's data"
    assert len(stored_for(base, "token-ann")) == 1, "the user token sent a notification"


# -- 5. the Host allow-list on loopback -------------------------------------------------------


def test_runner_on_loopback_answers_loopback_host_names_only(shared):
    base, _ = shared
    port = base.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example"):
        reply = requests.get(
            f"{base}/stats", headers={**ADMIN_HEADERS, "Host": host}, timeout=TIMEOUT
        )
        assert reply.status_code == 400, f"{host}: {reply.status_code} {reply.text}"
        assert reply.headers["Content-Type"].startswith("application/json")
        assert "Host" in reply.json()["error"]
    posted = requests.post(
        f"{base}/notifications",
        json=in_app("host-user"),
        headers={**ADMIN_HEADERS, "Host": "evil.example"},
        timeout=TIMEOUT,
    )
    assert posted.status_code == 400, posted.text
    assert stored_for(base, "host-user") == [], "a request to a foreign Host was stored"

    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        reply = requests.get(
            f"{base}/stats", headers={**ADMIN_HEADERS, "Host": host}, timeout=TIMEOUT
        )
        assert reply.status_code == 200, f"{host}: {reply.status_code} {reply.text}"


# -- 6. a client guessing credentials ---------------------------------------------------------


def test_client_with_many_failed_credentials_is_slowed(tmp_path):
    with running_service({"DATA_DIR": str(tmp_path / "data")}) as base:
        replies = [
            requests.get(f"{base}/stats", headers=bearer(f"wrong-key-{attempt}"), timeout=TIMEOUT)
            for attempt in range(12)
        ]
    statuses = [reply.status_code for reply in replies]
    assert 429 in statuses, statuses
    first_slowed = statuses.index(429)
    # "After about 10": the first ones are plain refusals, the later ones all 429.
    assert 7 <= first_slowed <= 10, statuses
    assert set(statuses[:first_slowed]) == {401}, statuses
    assert set(statuses[first_slowed:]) == {429}, statuses
    for reply in replies[:first_slowed]:
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    for reply in replies[first_slowed:]:
        assert int(reply.headers["Retry-After"]) >= 1, reply.headers
        assert "failed credentials" in reply.json()["error"]


# -- every endpoint's rule, through the runner, for keys and an issuer's JWTs ------------------


def test_every_endpoint_through_the_runner_for_keys_and_issuer_jwts(
    tmp_path, jwks_url, signing_key
):
    """401 without a credential, 403 with a key or JWT lacking the scope, success with it."""
    import jwt as pyjwt

    from tests.support.jwks import AUDIENCE, ISSUER, KID
    from tests.test_access import ENDPOINTS, SCOPES

    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "AUTH_JWT_ISSUER": ISSUER,
        "AUTH_JWT_AUDIENCE": AUDIENCE,
        "AUTH_JWKS_URL": jwks_url,
    }
    now = int(time.time())

    def issuer_jwt(scope: str) -> str:
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 600}
        claims["scope"] = f"notifications:{scope}"
        return pyjwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": KID})

    with running_service(env) as base:
        admin = requests.post(
            f"{base}/notifications", json=in_app("ann"), headers=ADMIN_HEADERS, timeout=TIMEOUT
        )
        notification_id = admin.json()["id"]
        keys = {}
        for scope in SCOPES:
            created = requests.post(
                f"{base}/api-keys",
                json={"name": scope, "scopes": [scope]},
                headers=ADMIN_HEADERS,
                timeout=TIMEOUT,
            )
            keys[scope] = created.json()["key"]
        for method, path, body, needed in ENDPOINTS:
            url = base + path.replace("{id}", notification_id)

            def call(headers, method=method, url=url, body=body):
                return requests.request(method, url, json=body, headers=headers, timeout=TIMEOUT)

            nobody = call({})
            assert nobody.status_code == 401, (method, path)
            assert nobody.headers["WWW-Authenticate"].startswith("Bearer")
            for scope in SCOPES:
                for credential in (keys[scope], issuer_jwt(scope)):
                    status = call(bearer(credential)).status_code
                    if scope in (needed, "admin"):
                        assert status in (200, 201, 202, 409), (method, path, scope, status)
                    else:
                        assert status == 403, (method, path, scope, status)
        expired = pyjwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "exp": now - 120, "scope": "read"},
            signing_key,
            algorithm="RS256",
            headers={"kid": KID},
        )
        reply = requests.get(f"{base}/stats", headers=bearer(expired), timeout=TIMEOUT)
        assert reply.status_code == 401 and "error" in reply.json()
