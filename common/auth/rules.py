"""Each route's access rule: which scopes let a caller in, and whether a user token may.

Routes declare their rule where they are defined (`router.route(..., access=...)`); a route
that declares none needs `admin`, so a forgotten rule fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.auth.principal import ADMIN, USER_TOKEN, Principal
from common.errors import Forbidden


@dataclass(frozen=True)
class AccessRule:
    scopes: tuple[str, ...] = (ADMIN,)  # holding any one of these lets a caller in
    open: bool = False  # no credential needed at all
    own_user: bool = False  # a user token for the path's <user_id> lets its user in too
    user_resource: bool = False  # a user token passes; the view checks the data is its user's

    def describe(self) -> str:
        if self.open:
            return "open"
        users = " or the user's own token" if self.own_user or self.user_resource else ""
        return " or ".join(self.scopes) + users

    def check(self, principal: Principal, path_arguments: Mapping[str, str]) -> None:
        """Raise Forbidden unless `principal` may use this route (with these path values)."""
        if principal.kind == USER_TOKEN:
            if self.user_resource:
                return
            if self.own_user and principal.is_user(path_arguments.get("user_id", "")):
                return
            raise Forbidden("a user token can only read its own user's notifications")
        if not any(principal.has(scope) for scope in self.scopes):
            needed = " or ".join(repr(s) for s in self.scopes)
            raise Forbidden(f"this credential lacks the {needed} scope this request needs")


OPEN = AccessRule(scopes=(), open=True)


def needs(*scopes: str, own_user: bool = False, user_resource: bool = False) -> AccessRule:
    """Any one of `scopes` lets a caller in (none named: `admin`)."""
    return AccessRule(scopes=scopes or (ADMIN,), own_user=own_user, user_resource=user_resource)


def owner_check(principal: Principal | None, user_id: str) -> None:
    """For a `user_resource` route: a user token may see only its own user's data."""
    if principal is not None and principal.kind == USER_TOKEN and principal.user_id != user_id:
        raise Forbidden("a user token can only read its own user's notifications")
