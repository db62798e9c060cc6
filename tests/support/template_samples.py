"""A sample template document for the tests: `welcome`, every channel, in English and French."""

from __future__ import annotations

WELCOME = {
    "key": "welcome",
    "description": "Sent once, after sign-up",
    "default_locale": "en",
    "variables": {
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}},
        "required": ["name"],
    },
    "locales": {
        "en": {
            "email": {
                "subject": "Welcome, {{ name }}",
                "text": "Hi {{ name }}, thanks for signing up.",
                "html": "<p>Hi <b>{{ name }}</b>, thanks for signing up.</p>",
            },
            "sms": {"text": "Welcome {{ name }}!"},
            "in_app": {"title": "Welcome", "body": "Hi {{ name }}", "action_url": "/start"},
        },
        "fr": {
            "email": {
                "subject": "Bienvenue, {{ name }}",
                "text": "Bonjour {{ name }}, merci de votre inscription.",
                "html": "<p>Bonjour <b>{{ name }}</b>, merci de votre inscription.</p>",
            },
            "sms": {"text": "Bienvenue {{ name }} !"},
            "in_app": {"title": "Bienvenue", "body": "Bonjour {{ name }}", "action_url": "/start"},
        },
    },
}
