"""A bot page's command form, drawn from the commands its kind declares.

A select of the kind's commands (`?command=<action>` on the bot's page; without JavaScript its
"Choose" button reloads the page) and the chosen command's payload form, drawn from its schema
as the start form's config is (ui/kind_forms.py), a JSON textarea when the schema has nothing
to draw. A bot whose kind declares no commands, or that answers others too (`demo`), keeps the
free form: any action and a JSON payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botfleet.manager.services.kind_checks import KindDoc
from botfleet.manager.ui import kind_forms
from botfleet.manager.ui.kind_forms import FormErrors, SchemaForm

#: The select's choice for "another action" (no action is spelled so: they are snake_case).
OTHER = "-other"
#: Where a refusal's paths go when no drawn field takes them.
FIXED_INPUTS = {"action": "action", "payload": "payload"}


@dataclass(frozen=True)
class CommandForm:
    declared: tuple[str, ...]  # the kind's commands, in its order
    chosen: str  # a declared action, or "" for the free form
    open: bool  # an action the kind does not declare may be sent
    payload: SchemaForm
    description: str = ""

    @property
    def picker(self) -> bool:
        return bool(self.declared)


@dataclass
class CommandState:
    """A refused command's form, shown again: the action, what was typed, the errors."""

    chosen: str = ""
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def command_form(kind: KindDoc | None, wanted: str) -> CommandForm:
    """The form for `wanted` (an action, OTHER or ""): a declared action's drawn form, else the
    first declared one, else the free form."""
    declared = tuple(kind.commands) if kind is not None and kind.commands else ()
    is_open = kind is None or kind.commands is None or kind.open_commands
    if wanted in declared:
        chosen = wanted
    elif wanted == OTHER and is_open:
        chosen = ""
    else:
        chosen = declared[0] if declared else ""
    if not chosen or kind is None or kind.commands is None:
        return CommandForm(declared, "", is_open, SchemaForm(area="payload"))
    schema = kind.commands[chosen]
    description = str(schema.get("description") or "") if isinstance(schema, dict) else ""
    drawn = kind_forms.schema_form(schema, "payload")
    drawn = SchemaForm(area="payload", fields=drawn.fields, extra=drawn.extra)
    return CommandForm(declared, chosen, is_open, drawn, description)


def shown_form(kind: KindDoc | None, submitted: dict[str, str]) -> CommandForm:
    """The form that was submitted (its hidden `form` input says drawn or free)."""
    action = submitted.get("action", "").strip()
    return command_form(kind, action if submitted.get("form") == "drawn" else OTHER)


def read_payload(shown: CommandForm, submitted: dict[str, str], *, max_depth: int) -> Any:
    """The payload the form makes; a payload that is not JSON, or a field of the wrong type,
    is refused by path (422, as the API refuses a payload that does not match)."""
    errors = FormErrors()
    payload = kind_forms.read_fields(shown.payload, submitted, errors, max_depth=max_depth)
    errors.raise_if_any()
    return payload


def refused_state(shown: CommandForm | None, submitted: dict[str, str], exc: Any) -> CommandState:
    """A refused command's form as it was, each of the refusal's errors beside its field."""
    fields = list(shown.payload.fields) if shown is not None else []
    errors = kind_forms.errors_by_input(exc, fields, FIXED_INPUTS)
    kept = {k: v for k, v in submitted.items() if k != "csrf_token"}
    chosen = shown.chosen if shown is not None and shown.chosen else OTHER
    return CommandState(chosen=chosen, values=kept, errors=errors)
