"""Which container images users may name in `image` (POST /bots): the operator's allow-list.

A user-chosen image is code the engine runs (Nomad even pulls it, with the host's network), so
it is held to the same rule as `module:Class` bots: only what the operator allowed
(`BOTFLEET_ALLOWED_IMAGES`; by default the backend's own runtime image and nothing else).

Matching is on the *normalised* reference, the way Docker reads it: a missing registry is
`docker.io`, a one-part Docker Hub name is `library/<name>`, a missing tag is `:latest`. So
`botfleet-runtime`, `botfleet-runtime:latest` and `docker.io/library/botfleet-runtime:latest`
are one image, and `evil/botfleet-runtime` or `botfleet-runtime:latest.evil` are others.
Patterns are normalised the same way; `*` and `?` never match `/` (a pattern for one
repository path never reaches into another), `[...]` is not special. A digest reference
(`name@sha256:…`) matches only a pattern that allows it, e.g. `registry/bots/*`: a pattern
naming a tag does not vouch for arbitrary content by digest. The pattern `*` alone allows
every image (as `["*"]` does for bot modules): the operator's explicit choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from botfleet.manager.core.errors import ErrorCode, Invalid

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def _split_domain(ref: str) -> tuple[str, str]:
    """(registry, path-with-tag): the first part is a registry only when it looks like a host
    (a dot, a port, or `localhost`), as Docker decides."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain = first.lower()
        return (DOCKER_HUB if domain in _HUB_ALIASES else domain), rest
    return DOCKER_HUB, ref


def normalise(ref: str, *, pattern: bool = False) -> str:
    """The full reference `registry/path:tag[@digest]` (see the module docstring).

    For a pattern, `:latest` is added only when its last path part has no tag, digest or
    wildcard (`bots/*` already covers every tag)."""
    domain, remainder = _split_domain(ref.strip())
    name, at, digest = remainder.partition("@")
    last = name.rsplit("/", 1)[-1]
    has_tag = ":" in last
    if domain == DOCKER_HUB and "/" not in name:
        name = f"library/{name}"
    wildcard = pattern and ("*" in last or "?" in last)
    if not has_tag and not at and not wildcard:
        name += ":latest"
    return f"{domain}/{name}" + (f"@{digest}" if at else "")


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    for char in normalise(pattern, pattern=True):
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out))


def image_allowed(image: str, patterns: Iterable[str]) -> bool:
    """Whether `image` matches one of `patterns` (both normalised first)."""
    full = normalise(image)
    wanted = [p.strip() for p in patterns if p.strip()]
    return "*" in wanted or any(_compiled(p).fullmatch(full) for p in wanted)


def allowed_patterns(configured: list[str] | None, runtime_image: str | None) -> list[str]:
    """The operator's list; when unset, the backend's runtime image only (none for a backend
    that runs no images)."""
    if configured is not None:
        return configured
    return [runtime_image] if runtime_image else []


def check_image(image: str | None, patterns: list[str]) -> None:
    """Raise 422 `image_not_allowed` unless `image` is None (the backend's default) or allowed.

    The message names only the requested image: never the list, never what the engine holds,
    so a refusal tells a user nothing about other images.
    """
    if image is None or image_allowed(image, patterns):
        return
    raise Invalid(
        ErrorCode.IMAGE_NOT_ALLOWED,
        f"image {image!r} is not allowed here; the operator lists allowed images in "
        "BOTFLEET_ALLOWED_IMAGES",
    )
