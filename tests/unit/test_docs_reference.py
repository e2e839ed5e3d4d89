"""The reference pages of the documentation site (docs/reference/*.md) are what
scripts/gen_reference.py writes from the code now: a setting, an error code, a transition or a
metric added without regenerating them fails here, and the message says what to run."""

from __future__ import annotations

import importlib.util

import pytest

from tests.support import REPO

SPEC = importlib.util.spec_from_file_location("gen_reference", REPO / "scripts/gen_reference.py")
assert SPEC is not None and SPEC.loader is not None
gen_reference = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gen_reference)


@pytest.mark.parametrize("name", sorted(gen_reference.PAGES))
def test_the_committed_reference_page_is_what_the_code_generates(name: str) -> None:
    committed = REPO / "docs" / "reference" / name
    assert committed.exists(), f"docs/reference/{name} missing: run scripts/gen_reference.py"
    assert committed.read_text() == gen_reference.PAGES[name](), (
        f"docs/reference/{name} is stale: run .venv/bin/python scripts/gen_reference.py"
    )


def test_every_error_code_and_setting_is_on_its_page() -> None:
    from botfleet.manager.core.errors import ErrorCode
    from botfleet.manager.core.settings import Settings

    codes = (REPO / "docs/reference/error-codes.md").read_text()
    settings = (REPO / "docs/reference/configuration.md").read_text()
    assert all(f"`{code.value}`" in codes for code in ErrorCode)
    assert all(f"`BOTFLEET_{name.upper()}`" in settings for name in Settings.model_fields)
