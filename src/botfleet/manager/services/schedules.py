"""Schedule records: create, read, list, change, pause and delete a user's schedules, and the
bots and firings of one. Firing them is `manager/services/schedule_firing.py`.

A schedule's template is checked when it is stored, as POST /bots would check it (its kind,
config, secrets, image, state support), so a bad template is a 422 then, not a failure at fire
time; limits and duplicates can only be judged when it fires. Its secrets are sealed apart and
never shown.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import BotfleetError, ErrorCode, NotFound
from botfleet.manager.core.models import Bot, new_id, utcnow
from botfleet.manager.core.schedule_models import Schedule, ScheduleFiring
from botfleet.manager.core.sealing import SecretBox
from botfleet.manager.schemas.bots import BotCreate
from botfleet.manager.schemas.schedules import (
    ScheduleCreate,
    SchedulePublic,
    ScheduleUpdate,
)
from botfleet.manager.services.bot_requests import BotRequests
from botfleet.manager.services.keyset import PageRequest, read_page
from botfleet.manager.services.schedule_times import next_fire, parse_cron, parse_zone

#: Firings kept per schedule (the newest; those whose bot still has a stop to come are kept).
KEEP_FIRINGS = 100


def _stored_template(template: BotCreate) -> dict[str, Any]:
    """The template as stored and shown: the POST /bots body as sent, without its secrets."""
    return template.model_dump(mode="json", exclude={"secrets"}, exclude_unset=True)


def _sealed_secrets(template: BotCreate, box: SecretBox) -> str | None:
    return box.seal(template.secrets) if template.secrets else None


def template_request(schedule: Schedule, box: SecretBox) -> BotCreate:
    """The POST /bots body a firing sends: the stored template, its secrets opened, validated
    again (a ValidationError if the API no longer accepts it)."""
    body = dict(schedule.template)
    if schedule.template_secrets_sealed:
        body["secrets"] = box.open(schedule.template_secrets_sealed)
    return BotCreate.model_validate_json(json.dumps(body))


def public(schedule: Schedule) -> SchedulePublic:
    local = None
    if schedule.next_fire_at is not None:
        with contextlib.suppress(BotfleetError):  # a zone the tz database no longer has
            local = schedule.next_fire_at.astimezone(parse_zone(schedule.timezone))
    return SchedulePublic(
        id=schedule.id,
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        template=schedule.template,
        duration_s=schedule.duration_s,
        window_end=schedule.window_end,
        overlap=schedule.overlap,
        missed=schedule.missed,
        paused=schedule.paused,
        next_fire_at=schedule.next_fire_at,
        next_fire_local=local,
        last_fired_at=schedule.last_fired_at,
        last_outcome=schedule.last_outcome,
        last_bot_id=schedule.last_bot_id,
        last_reason=schedule.last_reason,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


def create_schedule(
    session: Session,
    *,
    user_id: str,
    data: ScheduleCreate,
    requests: BotRequests,
    now: datetime | None = None,
) -> Schedule:
    """Store a schedule, its first fire time computed (none while paused). 422 for a bad
    expression or zone, or a template its kind refuses."""
    spec = parse_cron(data.cron, data.timezone)
    requests.check_start(session, user_id=user_id, data=data.template)
    now = now or utcnow()
    schedule = Schedule(
        id=new_id(),
        user_id=user_id,
        name=data.name,
        cron=spec.expression,
        timezone=data.timezone,
        template=_stored_template(data.template),
        template_secrets_sealed=_sealed_secrets(data.template, requests.box),
        duration_s=data.duration_s,
        window_end=data.window_end,
        overlap=data.overlap,
        missed=data.missed,
        paused=data.paused,
        next_fire_at=None if data.paused else next_fire(spec, now),
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    session.flush()
    return schedule


def get_schedule(
    session: Session, schedule_id: str, *, user_id: str, lock: bool = False
) -> Schedule:
    """The user's schedule (another user's is not found); `lock`: its row locked until the
    transaction ends, so a change and a firing never interleave."""
    query = select(Schedule).where(Schedule.id == schedule_id, Schedule.user_id == user_id)
    schedule = session.scalar(query.with_for_update() if lock else query)
    if schedule is None:
        raise NotFound(ErrorCode.SCHEDULE_NOT_FOUND, f"no schedule {schedule_id}")
    return schedule


def list_schedules(
    session: Session, *, user_id: str, page: PageRequest = PageRequest()
) -> tuple[list[Schedule], str | None]:
    """A page of the user's schedules, newest first."""
    query = select(Schedule).where(Schedule.user_id == user_id)
    return read_page(session, query, keys=[Schedule.id], page=page, descending=True)


def update_schedule(
    session: Session,
    *,
    schedule_id: str,
    user_id: str,
    patch: ScheduleUpdate,
    requests: BotRequests,
    now: datetime | None = None,
) -> Schedule:
    """Apply the fields sent. A new expression or zone, or a resume, computes the next fire
    time from now (fire times passed while paused are not run); a pause clears it. The bounds
    (`duration_s`, `window_end`) apply to later firings: a bot already started keeps its stop."""
    now = now or utcnow()
    schedule = get_schedule(session, schedule_id, user_id=user_id, lock=True)
    sent = patch.model_fields_set
    cron = patch.cron if patch.cron is not None else schedule.cron
    timezone = patch.timezone if patch.timezone is not None else schedule.timezone
    spec = parse_cron(cron, timezone)
    if patch.template is not None:
        requests.check_start(session, user_id=user_id, data=patch.template)
        schedule.template = _stored_template(patch.template)
        schedule.template_secrets_sealed = _sealed_secrets(patch.template, requests.box)
    retime = bool(sent & {"cron", "timezone"}) or (
        patch.paused is not None and patch.paused != schedule.paused
    )
    schedule.cron, schedule.timezone = spec.expression, timezone
    for field in ("name", "overlap", "missed", "paused"):
        if getattr(patch, field) is not None:
            setattr(schedule, field, getattr(patch, field))
    for field in ("duration_s", "window_end"):  # null clears these
        if field in sent:
            setattr(schedule, field, getattr(patch, field))
    if schedule.paused:
        schedule.next_fire_at = None
    elif retime or schedule.next_fire_at is None:
        schedule.next_fire_at = next_fire(spec, now)
    schedule.updated_at = now
    return schedule


def delete_schedule(session: Session, schedule_id: str, *, user_id: str) -> None:
    """Delete the schedule and its history. Its bots stay (they keep `schedule_id`), and so do
    the stops still due for them (`duration_s`, `window_end`)."""
    schedule = get_schedule(session, schedule_id, user_id=user_id, lock=True)
    session.execute(
        delete(ScheduleFiring).where(
            ScheduleFiring.schedule_id == schedule.id, ScheduleFiring.stop_at.is_(None)
        )
    )
    session.delete(schedule)


def list_schedule_bots(
    session: Session, schedule_id: str, *, user_id: str, page: PageRequest = PageRequest()
) -> tuple[list[Bot], str | None]:
    """A page of the bots the schedule started, newest first."""
    get_schedule(session, schedule_id, user_id=user_id)
    query = select(Bot).where(Bot.schedule_id == schedule_id, Bot.user_id == user_id)
    return read_page(session, query, keys=[Bot.id], page=page, descending=True)


def list_firings(
    session: Session, schedule_id: str, *, user_id: str, page: PageRequest = PageRequest()
) -> tuple[list[ScheduleFiring], str | None]:
    """A page of the schedule's firings, newest first (the latest KEEP_FIRINGS are kept)."""
    get_schedule(session, schedule_id, user_id=user_id)
    query = select(ScheduleFiring).where(ScheduleFiring.schedule_id == schedule_id)
    return read_page(session, query, keys=[ScheduleFiring.id], page=page, descending=True)


def latest_firings(
    session: Session, schedule_ids: list[str], *, per_schedule: int
) -> dict[str, list[ScheduleFiring]]:
    """The newest firings of each schedule (the dashboard's list), one query per schedule over
    the (schedule_id, id) index."""
    out: dict[str, list[ScheduleFiring]] = {}
    for schedule_id in schedule_ids:
        out[schedule_id] = list(
            session.scalars(
                select(ScheduleFiring)
                .where(ScheduleFiring.schedule_id == schedule_id)
                .order_by(ScheduleFiring.id.desc())
                .limit(per_schedule)
            )
        )
    return out
