"""Which images a bot may name (SECURITY.md, images): references normalised as Docker reads them,
the allow-list's patterns; pure. Attacks through a real manager:
tests/integration/isolation/test_isolation_images.py."""

from __future__ import annotations

import pytest

from botfleet.manager.core.errors import Invalid
from botfleet.manager.services.images import allowed_patterns, check_image, image_allowed, normalise

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("botfleet-runtime", "docker.io/library/botfleet-runtime:latest"),
        ("botfleet-runtime:latest", "docker.io/library/botfleet-runtime:latest"),
        ("docker.io/library/botfleet-runtime", "docker.io/library/botfleet-runtime:latest"),
        ("index.docker.io/library/botfleet-runtime:1", "docker.io/library/botfleet-runtime:1"),
        ("evil/botfleet-runtime", "docker.io/evil/botfleet-runtime:latest"),
        ("localhost/x", "localhost/x:latest"),
        ("Registry.Internal:5000/bots/a:2", "registry.internal:5000/bots/a:2"),
        (f"botfleet-runtime@{DIGEST}", f"docker.io/library/botfleet-runtime@{DIGEST}"),
    ],
)
def test_references_are_normalised_as_docker_reads_them(ref: str, full: str) -> None:
    assert normalise(ref) == full


def test_the_runtime_image_matches_only_itself() -> None:
    allowed = ["botfleet-runtime:latest"]
    for same in ("botfleet-runtime", "docker.io/library/botfleet-runtime:latest"):
        assert image_allowed(same, allowed), same
    for lookalike in (
        "botfleet-runtime:latest.evil",
        "botfleet-runtime:latest2",
        "botfleet-runtime:1",
        "evil/botfleet-runtime",
        "evil.io/botfleet-runtime",
        "localhost/botfleet-runtime",
        "botfleet-runtime-evil",
        f"botfleet-runtime@{DIGEST}",  # by design: a tag does not vouch for any digest
        f"botfleet-runtime:latest@{DIGEST}",
    ):
        assert not image_allowed(lookalike, allowed), lookalike


def test_wildcards_never_cross_a_slash() -> None:
    allowed = ["registry.internal/bots/*"]
    for ok in (
        "registry.internal/bots/runner",
        "registry.internal/bots/runner:2.1",
        f"registry.internal/bots/runner@{DIGEST}",
        "REGISTRY.INTERNAL/bots/runner:2",
    ):
        assert image_allowed(ok, allowed), ok
    for refused in (
        "registry.internal/bots/team/runner",  # a deeper path
        "registry.internal/botsevil/runner",
        "registry.internal.evil.com/bots/runner",
        "evil.com/registry.internal/bots/runner",
        "registry.internal/runner",
        "bots/runner",
    ):
        assert not image_allowed(refused, allowed), refused
    assert not image_allowed("a/b:1", ["a?b:1"]), "? is one character, never a slash"
    assert image_allowed("team/x:1", ["team/?:1"])
    assert image_allowed("anything/at/all:9", ["*"]), '"*" alone is the operator allowing all'
    assert image_allowed(f"botfleet-runtime@{DIGEST}", ["botfleet-runtime@*"]), "digests opted in"
    assert not image_allowed("botfleet-runtime:latest", ["botfleet-runtime@*"])


def test_the_default_is_the_backends_runtime_image_only() -> None:
    assert allowed_patterns(None, "botfleet-runtime:latest") == ["botfleet-runtime:latest"]
    assert allowed_patterns(None, None) == [], "the process backend runs no images"
    assert allowed_patterns(["x/*"], "botfleet-runtime:latest") == ["x/*"]
    check_image(None, [])  # no image named: the backend's default, always fine
    with pytest.raises(Invalid) as refused:
        check_image("secret-registry.internal/thing:1", ["registry.internal/bots/*"])
    assert refused.value.code == "image_not_allowed"
    assert "registry.internal/bots" not in str(refused.value), "the list is never disclosed"
