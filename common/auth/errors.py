"""Errors of the credential checks, mapped to HTTP answers by common/auth/authenticate.py."""


class InvalidCredential(Exception):
    """A credential that was presented but is not valid (401)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
