"""An expired API key is refused on a cache hit: expiry needs no commit to drop an entry; pure."""

from __future__ import annotations

from datetime import timedelta

import pytest

from botfleet.manager.core.errors import Unauthorized
from botfleet.manager.core.models import utcnow
from botfleet.manager.hot_path.credentials import KnownKey
from botfleet.manager.services import auth


def test_an_expired_entry_in_the_cache_is_refused() -> None:
    """Expiry needs no commit to drop an entry: `caller_for_key` compares it on a hit."""

    class OneEntry:
        def get(self, _digest: str) -> KnownKey:
            return KnownKey(user_id="u", key_id="k", expires_at=utcnow() - timedelta(seconds=1))

    with pytest.raises(Unauthorized) as refused:
        auth.caller_for_key(None, OneEntry(), token="bf_x")  # type: ignore[arg-type]
    assert refused.value.code == "key_expired"
