"""Who may call the service: API keys, issuer JWTs, per-user tokens."""
