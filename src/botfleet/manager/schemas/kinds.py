"""Bot kinds: what an operator registers (`POST /admin/kinds`, `PUT /admin/kinds/{name}`) and
what users see of them (`GET /kinds`). Whether the schemas inside are valid JSON Schemas is
checked by manager/services/kind_checks.py (422 `invalid_schema`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from botfleet.manager.schemas.bots import IMAGE_REF
from botfleet.manager.schemas.bounds import MAX_SECRETS, Strict, check_config, json_size
from botfleet.manager.schemas.commands import RESERVED_ACTION_NAMES
from botfleet.manager.schemas.health_rules import HealthRules
from botfleet.manager.schemas.list_page import Page
from botfleet.manager.schemas.placement import PlacementRequest, Resources
from botfleet.manager.schemas.restart import RestartPolicy

#: Lowercase snake or kebab case; never a `module:Class` (no ':'), never a built-in's name.
KIND_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*$")
PYTHON_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
#: A kind's document (its schemas included) is bounded as a config is, a little larger.
MAX_KIND_BYTES = 256 * 1024
MAX_COMMANDS = 64
MAX_PACKAGE_ITEMS = 64

KindName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=KIND_NAME.pattern)]
Item = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class RunPython(Strict):
    python: Annotated[str, StringConstraints(max_length=200, pattern=PYTHON_REF.pattern)] = Field(
        ..., description="`module:Class`, a subclass of `botfleet.runtime.Bot`."
    )


class RunExec(Strict):
    exec: list[Item] = Field(
        ...,
        min_length=1,
        max_length=64,
        description="The argv run instead of `python -m botfleet.runtime`, with the same "
        "environment (BOTFLEET_*) and isolation.",
    )


class PackageWheels(Strict):
    wheels: list[Item] = Field(..., min_length=1, max_length=MAX_PACKAGE_ITEMS)


class PackageRequirements(Strict):
    requirements: list[Item] = Field(..., min_length=1, max_length=MAX_PACKAGE_ITEMS)


class KindDefinition(Strict):
    """`PUT /admin/kinds/{name}`: a kind's whole document (the name is the path's)."""

    run: RunPython | RunExec
    image: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    package: PackageWheels | PackageRequirements | None = Field(
        None,
        description="For the process backend: installed, with botfleet-runtime, into a "
        "virtualenv of this kind and version (cached); the manager's own is never touched.",
    )
    config_schema: dict[str, Any] | None = Field(
        None, description="A JSON Schema every bot's config must match (none: any object)."
    )
    secrets: list[Annotated[str, StringConstraints(pattern=SECRET_NAME.pattern)]] = Field(
        default_factory=list,
        max_length=MAX_SECRETS,
        description="Secret names every bot of the kind must be started with.",
    )
    commands: dict[str, dict[str, Any]] | None = Field(
        None,
        description="The custom commands the kind answers, each with the JSON Schema of its "
        "payload; none: any action, unchecked.",
    )
    resources: Resources | None = None
    placement: PlacementRequest | None = Field(
        None, description="Where its bots run unless they name a placement of their own."
    )
    restart: RestartPolicy | None = Field(
        None, description="The restart policy of the kind's bots that are started with none."
    )
    health: HealthRules | None = None  # the rules of the kind's bots that name none
    description: Annotated[str, StringConstraints(max_length=2000)] = ""

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.match(value):
            raise ValueError("must be an image reference like `registry/name:tag`")
        return value

    @field_validator("secrets")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each secret name at most once")
        return value

    @field_validator("commands")
    @classmethod
    def _actions(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        if value is None:
            return None
        if len(value) > MAX_COMMANDS:
            raise ValueError(f"at most {MAX_COMMANDS} commands")
        for action in value:
            if not ACTION_NAME.match(action) or action in RESERVED_ACTION_NAMES:
                raise ValueError(
                    f"action {action!r} must be snake_case (at most 32 characters), and not "
                    "reconfigure, leave or secrets"
                )
        return value

    @field_validator("config_schema")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_config(value)

    def document(self) -> dict[str, Any]:
        """The kind as stored (JSON types, unset parts None)."""
        body = self.model_dump(mode="json", exclude_none=False)
        body.pop("name", None)
        if json_size(body) > MAX_KIND_BYTES:
            raise ValueError(f"the kind is larger than {MAX_KIND_BYTES} bytes")
        if body["resources"] is not None:
            body["resources"] = {k: v for k, v in body["resources"].items() if v is not None}
        if self.placement is not None:
            body["placement"] = self.placement.document() or None
        if body["restart"] is not None:
            body["restart"] = {k: v for k, v in body["restart"].items() if v is not None}
        return body


class KindCreate(KindDefinition):
    """`POST /admin/kinds`: a new kind, version 1."""

    name: KindName


class KindPublic(BaseModel):
    """A kind as users see it (`GET /kinds`): what they may start and how to start it."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    version: int
    description: str
    config_schema: dict[str, Any] | None
    secrets: list[str]
    commands: dict[str, dict[str, Any]] | None
    health: list[dict[str, Any]] | None = Field(None, description="Its bots' health rules.")
    builtin: bool = Field(False, description="Built into botfleet (`demo`, `telegram`).")


class KindAdmin(KindPublic):
    """A kind as the operator registered it (`POST`/`PUT /admin/kinds`)."""

    run: dict[str, Any]
    image: str | None
    package: dict[str, Any] | None
    resources: dict[str, Any] | None
    placement: dict[str, Any] | None = None
    restart: dict[str, Any] | None
    created_at: datetime | None
    retired_at: datetime | None


KindPage = Page[KindPublic]
