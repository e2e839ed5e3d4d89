"""Bot kinds: the operator registers, updates and retires them (admin token); users list what
they may start (`GET /kinds`, a user's key or the admin token)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Path, Response, status

from botfleet.manager.core.errors import error_responses
from botfleet.manager.http.deps import AdminDep, BotRequestsDep, SessionDep, Viewer
from botfleet.manager.http.page_params import PageQuery
from botfleet.manager.schemas.kinds import (
    KindAdmin,
    KindCreate,
    KindDefinition,
    KindPage,
    KindPublic,
)
from botfleet.manager.services import kinds
from botfleet.manager.services.kind_checks import KindDoc

KIND_ERRORS = (
    "A schema that is not a valid JSON Schema answers 422 `invalid_schema` with "
    "`errors: [{path, message}]` (JSON pointers into the body); `resources` over the "
    "maxima (BOTFLEET_MAX_BOT_CPU, BOTFLEET_MAX_BOT_MEMORY_MB) 422 `resources_over_limit`; a "
    "`placement` the backend cannot honour 422 `placement_unsupported`. Every change is in "
    "`GET /admin/audit`."
)

admin = APIRouter(
    prefix="/admin/kinds",
    tags=["kinds"],
    dependencies=[AdminDep],
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
)
public = APIRouter(
    prefix="/kinds", tags=["kinds"], responses=error_responses(401, 403, 404, 422, 503)
)
KindName = Path(max_length=64)


def _admin_view(kind: KindDoc) -> KindAdmin:
    fields = asdict(kind)
    fields["secrets"] = list(kind.secrets)
    return KindAdmin.model_validate(fields)


def _public_view(kind: KindDoc) -> KindPublic:
    return KindPublic.model_validate(
        {
            "name": kind.name,
            "version": kind.version,
            "description": kind.description,
            "config_schema": kind.config_schema,
            "secrets": list(kind.secrets),
            "commands": kind.commands,
            "builtin": kind.builtin,
        }
    )


@admin.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KindAdmin,
    summary="Register a bot kind",
    description='Version 1 of a new kind: users start its bots with `{"bot": "<name>"}`. '
    "409 `kind_exists` for a name already registered (retired too); 422 for a built-in's "
    "name. " + KIND_ERRORS,
)
def register_kind(body: KindCreate, session: SessionDep, bots: BotRequestsDep) -> KindAdmin:
    return _admin_view(kinds.register(session, body, limits=bots.limits))


@admin.put(
    "/{name}",
    response_model=KindAdmin,
    summary="Register a new version of a kind",
    description="The whole new document; its `version` is the previous one plus one. Running "
    "bots keep the version they started with (relaunches too); new bots get this one. A "
    "retired kind comes back. 404 `kind_not_found`; 409 `kind_builtin`. " + KIND_ERRORS,
)
def update_kind(
    body: KindDefinition, session: SessionDep, bots: BotRequestsDep, name: str = KindName
) -> KindAdmin:
    return _admin_view(kinds.update_kind(session, name, body, limits=bots.limits))


@admin.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Retire a kind",
    description="No new bot of the kind starts (POST /bots and relaunches answer 409 "
    "`kind_retired`); running bots run on, restarts included. Idempotent. 404 "
    "`kind_not_found`; 409 `kind_builtin`.",
)
def retire_kind(session: SessionDep, name: str = KindName) -> Response:
    kinds.retire(session, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@public.get(
    "",
    response_model=KindPage,
    summary="The kinds you may start",
    description="Built-in and registered kinds that are not retired, by name, a page at a "
    "time: each with its latest version, config schema, the secrets it needs and its commands.",
)
def list_kinds(session: SessionDep, viewer: Viewer, page: PageQuery) -> KindPage:
    rows, next_cursor = kinds.list_live(session, page)
    return KindPage(items=[_public_view(k) for k in rows], next_cursor=next_cursor)


@public.get(
    "/{name}",
    response_model=KindPublic,
    summary="One kind",
    description="Its latest version. 404 `kind_not_found`; 409 `kind_retired` once retired.",
)
def get_kind(session: SessionDep, viewer: Viewer, name: str = KindName) -> KindPublic:
    return _public_view(kinds.get_live(session, name))


router = APIRouter()
router.include_router(admin)
router.include_router(public)
