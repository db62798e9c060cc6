"""Notification templates: versioned, immutable documents and their rendering."""
