"""Bot kinds: registered by the operator (one row per version), the built-ins in code, and the
kind a bot runs.

A kind's name is what users start (`POST /bots {"bot": "<kind>"}`). An update inserts the next
version: a bot keeps the version it started with (`Bot.kind_version`), through its restarts and
relaunches. Retiring stamps every row of the kind: no new bot (nor relaunch) of it starts, the
running ones run on; a later update (PUT) brings it back as a new version. Every change is in
the admin log (`GET /admin/audit`), in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, Invalid, NotFound
from botfleet.manager.core.kind_models import Kind
from botfleet.manager.core.models import Bot, utcnow
from botfleet.manager.schemas.kinds import KindCreate, KindDefinition
from botfleet.manager.services import audit
from botfleet.manager.services.bot_resources import StartLimits
from botfleet.manager.services.builtin_kinds import BUILTIN_KINDS
from botfleet.manager.services.keyset import PageRequest, decode_cursor, encode_cursor
from botfleet.manager.services.kind_checks import KindDoc, check_kind_schemas

KIND_REGISTERED = "kind_registered"
KIND_UPDATED = "kind_updated"
KIND_RETIRED = "kind_retired"


def doc_of(row: Kind) -> KindDoc:
    return KindDoc(
        name=row.name,
        version=row.version,
        run=dict(row.run),
        image=row.image,
        package=row.package,
        config_schema=row.config_schema,
        secrets=tuple(row.secrets or ()),
        commands=row.commands,
        resources=row.resources,
        placement=row.placement,
        restart=row.restart,
        health=row.health or None,
        description=row.description or "",
        created_at=row.created_at,
        retired_at=row.retired_at,
    )


def _latest_row(session: Session, name: str, *, lock: bool = False) -> Kind | None:
    query = select(Kind).where(Kind.name == name).order_by(Kind.version.desc()).limit(1)
    return session.scalar(query.with_for_update() if lock else query)


def _document(body: KindDefinition, limits: StartLimits | None) -> dict[str, Any]:
    try:
        document = body.document()
    except ValueError as exc:
        raise Invalid(ErrorCode.INVALID_INPUT, str(exc)) from exc
    check_kind_schemas(document)
    if limits is not None:
        limits.check_kind(document)
    return document


def register(session: Session, body: KindCreate, *, limits: StartLimits | None = None) -> KindDoc:
    """Version 1 of a new kind: 409 `kind_exists` for a name taken (retired ones too), 422 for
    a built-in's name or a schema that is not a valid JSON Schema; with `limits`, 422 for
    resources over the admin's maxima or a placement the backend cannot honour."""
    if body.name in BUILTIN_KINDS:
        raise Invalid(ErrorCode.INVALID_INPUT, f"name: {body.name!r} is a built-in kind")
    document = _document(body, limits)
    if _latest_row(session, body.name) is not None:
        raise Conflict(
            ErrorCode.KIND_EXISTS,
            f"kind {body.name!r} exists; PUT /admin/kinds/{body.name} registers a new version",
        )
    row = Kind(name=body.name, version=1, created_at=utcnow(), **document)
    session.add(row)
    session.flush()  # a racing registration of the same name fails here (primary key)
    _audit(session, KIND_REGISTERED, row)
    return doc_of(row)


def update_kind(
    session: Session, name: str, body: KindDefinition, *, limits: StartLimits | None = None
) -> KindDoc:
    """The next version of a kind (a retired one comes back); bots keep the version they run.
    `limits` as for `register`."""
    if name in BUILTIN_KINDS:
        raise Conflict(ErrorCode.KIND_BUILTIN, f"{name!r} is a built-in kind: it cannot change")
    document = _document(body, limits)
    latest = _latest_row(session, name, lock=True)
    if latest is None:
        raise NotFound(ErrorCode.KIND_NOT_FOUND, f"no kind {name!r}")
    row = Kind(name=name, version=latest.version + 1, created_at=utcnow(), **document)
    session.add(row)
    session.flush()
    _audit(session, KIND_UPDATED, row)
    return doc_of(row)


def retire(session: Session, name: str) -> None:
    """No new bots of the kind; running ones keep running. Idempotent."""
    if name in BUILTIN_KINDS:
        raise Conflict(ErrorCode.KIND_BUILTIN, f"{name!r} is a built-in kind: it cannot retire")
    latest = _latest_row(session, name, lock=True)
    if latest is None:
        raise NotFound(ErrorCode.KIND_NOT_FOUND, f"no kind {name!r}")
    if latest.retired_at is not None:
        return
    now = utcnow()
    session.execute(
        update(Kind).where(Kind.name == name, Kind.retired_at.is_(None)).values(retired_at=now)
    )
    latest.retired_at = now
    _audit(session, KIND_RETIRED, latest)


def _audit(session: Session, action: str, row: Kind) -> None:
    change: dict[str, Any] = {"version": row.version}
    if action != KIND_RETIRED:
        change["run"] = row.run
        if row.image:
            change["image"] = row.image
    audit.record_admin_action(
        session, action=action, target=f"kind:{row.name}", user_id=None, change=change
    )


# ---- reading ---------------------------------------------------------------------------------


def find(session: Session, name: str, version: int | None = None) -> KindDoc | None:
    """A kind's given version (None: its latest), retired or not; None when there is none."""
    builtin = BUILTIN_KINDS.get(name)
    if builtin is not None:
        return builtin
    row = _latest_row(session, name) if version is None else session.get(Kind, (name, version))
    return doc_of(row) if row is not None else None


def get_live(session: Session, name: str) -> KindDoc:
    """The kind a new bot starts with: its latest version. 404 `kind_not_found` for an unknown
    name; 409 `kind_retired` for a retired kind."""
    kind = find(session, name)
    if kind is None:
        raise NotFound(ErrorCode.KIND_NOT_FOUND, f"no kind {name!r}")
    refuse_retired(kind)
    return kind


def refuse_retired(kind: KindDoc) -> None:
    if kind.retired_at is not None:
        raise Conflict(
            ErrorCode.KIND_RETIRED, f"kind {kind.name!r} is retired: no new bots of it start"
        )


def kind_of_bot(session: Session, bot: Bot) -> KindDoc | None:
    """The kind version the bot runs (a bot from before kinds: its kind's latest); None for a
    raw `module:Class` bot."""
    if ":" in bot.bot:
        return None
    return find(session, bot.bot, bot.kind_version)


def live_names(session: Session) -> list[str]:
    """The names a user may start, sorted (the dashboard's start form)."""
    return [kind.name for kind in _live(session)]


def _live(session: Session, after: str | None = None, limit: int | None = None) -> list[KindDoc]:
    """The live kinds' latest versions, by name, after `after`."""
    newest = (
        select(Kind.name, func.max(Kind.version).label("version")).group_by(Kind.name).subquery()
    )
    query = (
        select(Kind)
        .join(newest, (Kind.name == newest.c.name) & (Kind.version == newest.c.version))
        .where(Kind.retired_at.is_(None))
        .order_by(Kind.name)
    )
    if after is not None:
        query = query.where(Kind.name > after)
    if limit is not None:
        query = query.limit(limit)
    kinds = [doc_of(row) for row in session.scalars(query)]
    kinds += [k for k in BUILTIN_KINDS.values() if after is None or k.name > after]
    return sorted(kinds, key=lambda k: k.name)[:limit]


def list_live(session: Session, page: PageRequest) -> tuple[list[KindDoc], str | None]:
    """A page of the kinds users may start, by name (`?cursor=` is the last name shown)."""
    # The keyset cursor every list uses: a cursor that is not one of ours is 422 invalid_cursor.
    after = str(decode_cursor(page.cursor, [str])[0]) if page.cursor else None
    kinds = _live(session, after=after, limit=page.limit + 1)
    more = len(kinds) > page.limit
    kinds = kinds[: page.limit]
    next_cursor = encode_cursor([kinds[-1].name]) if more and kinds else None
    return kinds, next_cursor
