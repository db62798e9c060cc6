"""Who is calling, once their credential was checked, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass

SEND = "send"
READ = "read"
RETRY = "retry"
TEMPLATES = "templates"
ADMIN = "admin"
SCOPES = (SEND, READ, RETRY, TEMPLATES, ADMIN)

# How a principal got here: the kinds of credential the service accepts.
API_KEY = "api_key"
ADMIN_ENV = "admin_env"  # ADMIN_API_KEY from the environment
ISSUER_JWT = "issuer_jwt"
USER_TOKEN = "user_token"
SESSION = "session"  # the web pages' signed cookie, made at login from an admin credential


@dataclass(frozen=True)
class Principal:
    kind: str
    id: str  # names the credential in logs and in its rate-limit bucket; never a secret
    scopes: frozenset[str]
    user_id: str | None = None  # set for a per-user token: the one user it may read
    send_rate: float | None = None  # a key's own SEND_RATE_LIMIT, when it carries one

    def has(self, scope: str) -> bool:
        """`admin` holds every scope; a user token holds none (it reads its own user only)."""
        return scope in self.scopes or ADMIN in self.scopes

    def is_user(self, user_id: str) -> bool:
        return self.kind == USER_TOKEN and self.user_id == user_id


def scope_problem(scopes: object) -> str | None:
    """Why a list of scopes (from a request or the command line) is unusable, or None."""
    if not isinstance(scopes, list) or not scopes:
        return f"must be a non-empty list of scopes from {', '.join(SCOPES)}"
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        return f"unknown scope {unknown[0]!r}; use {', '.join(SCOPES)}"
    return None
