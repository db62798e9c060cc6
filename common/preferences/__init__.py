"""Per-user preferences: which channels and categories a user receives, and their quiet hours."""
