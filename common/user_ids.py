"""The rule for a user id (common/model.py's), checked where an id arrives alone, in a path."""

from __future__ import annotations

from common.errors import ValidationError
from common.model import user_id_problem


def check_user_id(user_id: str) -> str:
    """`user_id` itself, or a ValidationError naming `user_id`: no notification can have it."""
    problem = user_id_problem(user_id)
    if problem:
        raise ValidationError(f"invalid user id: user_id {problem}", {"user_id": problem})
    return user_id
