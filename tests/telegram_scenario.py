"""The pizza scenario the telegram tests share (the README's example): a name is collected, a
menu of two buttons, an automatic step, placeholders, in English and German."""

from __future__ import annotations

from typing import Any

STEPS: dict[str, Any] = {
    "welcome": {
        "message": {"en": "Hi! What is your name?", "de": "Hallo! Wie heißt du?"},
        "collect": "name",
        "next": "menu",
    },
    "menu": {
        "message": {
            "en": "Hello {name}, what would you like?",
            "de": "Hallo {name}, was möchtest du?",
        },
        "buttons": [
            {"text": {"en": "Pizza", "de": "Pizza"}, "goto": "pizza"},
            {"text": {"en": "Salad", "de": "Salat"}, "goto": "salad"},
        ],
    },
    "pizza": {
        "message": {"en": "Pizza it is.", "de": "Also Pizza."},
        "auto": {"after_s": 1, "goto": "thanks"},
    },
    "salad": {
        "message": {"en": "Salad it is.", "de": "Also Salat."},
        "auto": {"after_s": 1, "goto": "thanks"},
    },
    "thanks": {"message": {"en": "Thank you, {name}!", "de": "Danke, {name}!"}},
}
HELP = {"en": "Send /start to begin.", "de": "Sende /start, um zu beginnen."}
SCENARIO: dict[str, Any] = {"start": "welcome", "help": HELP, "steps": STEPS}
