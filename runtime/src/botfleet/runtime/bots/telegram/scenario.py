"""The telegram bot's config as a validated model: a bad config is refused with a message that
names the bad field (`ScenarioError`), at start and on reconfigure alike."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_API_URL = "https://api.telegram.org"
DEFAULT_HELP = "Send /start to begin."
#: Telegram limits callback_data to 64 bytes; a button's data is the name of its target step.
MAX_STEP_NAME_BYTES = 64
MAX_MESSAGE_CHARS = 4096  # Telegram's limit for one message's text

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Language = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z_-]+$")]
#: A text per language, e.g. {"en": "Hi", "de": "Hallo"}; the first one is the fallback.
Texts = Annotated[
    dict[Language, Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]],
    Field(min_length=1),
]


class ScenarioError(ValueError):
    """The config is not a valid telegram scenario; the message names each bad field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Button(_Model):
    text: Texts
    goto: Name = Field(description="The step a press of this button leads to.")


class Auto(_Model):
    after_s: float = Field(ge=0, le=7 * 24 * 3600, description="Seconds until the transition.")
    goto: Name


class Step(_Model):
    message: Texts
    buttons: list[Button] = Field(default_factory=list, max_length=20)
    collect: Name | None = Field(None, description="Store the user's next text under this name.")
    next: Name | None = Field(None, description="The step after a collected answer.")
    auto: Auto | None = None

    @model_validator(mode="after")
    def _collect_needs_next(self) -> Step:
        if self.collect is not None and self.next is None:
            raise ValueError("a step with `collect` needs `next` (the step after the answer)")
        return self


class Scenario(_Model):
    start: Name | None = Field(None, description="The step /start enters; default: the first.")
    help: Texts | None = None
    steps: dict[Name, Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _targets_exist(self) -> Scenario:
        known = set(self.steps)
        if self.start is not None and self.start not in known:
            raise ValueError(f"start: unknown step {self.start!r}")
        for name, step in self.steps.items():
            targets = [(f"steps.{name}.next", step.next)]
            targets += [(f"steps.{name}.auto.goto", step.auto.goto if step.auto else None)]
            targets += [
                (f"steps.{name}.buttons.{i}.goto", button.goto)
                for i, button in enumerate(step.buttons)
            ]
            for where, target in targets:
                if target is not None and target not in known:
                    raise ValueError(f"{where}: unknown step {target!r}")
        return self

    @property
    def start_step(self) -> str:
        return self.start or next(iter(self.steps))


class TelegramConfig(_Model):
    language: Language = "en"
    api_url: str = Field(DEFAULT_API_URL, description="The Bot API server (a local one, a test).")
    poll_timeout_s: int = Field(10, ge=0, le=50, description="getUpdates long-poll timeout.")
    scenario: Scenario

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


def parse_config(config: dict[str, Any]) -> TelegramConfig:
    """The validated config, or ScenarioError naming every bad field."""
    try:
        return TelegramConfig.model_validate(config)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ScenarioError("invalid telegram config: " + "; ".join(problems)) from None


def pick(texts: dict[str, str], language: str) -> str:
    """The text in `language`, else in the first language listed."""
    return texts.get(language) or next(iter(texts.values()))


def render(texts: dict[str, str], language: str, values: dict[str, str]) -> str:
    """`pick`, with `{name}` replaced by collected values (plain text; unknown names stay)."""
    text = pick(texts, language)
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text[:MAX_MESSAGE_CHARS]
