"""Dashboard sessions end on the server, and sign-in is no open door (issue 27, points 7 and 8),
with plain HTTP against real managers: a copy of the session cookie is refused on every replica
once its session signed out; a sign-in form posted from another site is refused (403
`cross_origin`); a burst of wrong sign-ins from one address gets 429 `too_many_auth_failures`,
even for the right key, until its window ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest
import redis

from botfleet.manager.ui.session import COOKIE
from botfleet.manager.ui.session_guard import FAILURES_PREFIX
from tests.support import Manager, second_replica
from tests.ui_browser import ui_client


def a_copy(url: str, cookie: str) -> httpx.Client:
    """Another client holding only a copy of the cookie (as a thief would)."""
    return httpx.Client(base_url=url, cookies={COOKIE: cookie}, timeout=30)


def test_a_copied_cookie_is_refused_after_sign_out_on_every_replica(manager: Manager) -> None:
    user, api = manager.new_user()
    api.close()
    client, csrf = ui_client(manager.url, user["api_key"])
    cookie = client.cookies.get(COOKIE)
    assert cookie
    with closing(client), second_replica(manager) as other:
        copies = [a_copy(manager.url, cookie), a_copy(other.url, cookie)]
        for copy in copies:
            assert copy.get("/ui").status_code == 200  # a copy works while the session lives
        assert client.post("/ui/sign-out", data={"csrf_token": csrf}).status_code == 303
        for copy in copies:
            with closing(copy):
                answer = copy.get("/ui")
                assert answer.status_code == 303, answer.text
                assert answer.headers["location"] == "/ui/sign-in"
                refused = copy.post(f"/ui/bots/{'0' * 8}/stop", data={"csrf_token": csrf})
                assert refused.status_code == 303  # no action either
        again, _ = ui_client(manager.url, user["api_key"])  # signing in again is a new session
        with closing(again):
            assert again.get("/ui").status_code == 200


def test_a_sign_in_form_from_another_site_is_refused(manager: Manager) -> None:
    user, api = manager.new_user()
    api.close()
    form = {"credential": user["api_key"]}
    with httpx.Client(base_url=manager.url, timeout=30) as client:
        for headers in (
            {"Origin": "https://attacker.example"},
            {"Origin": manager.url.replace("127.0.0.1", "localhost")},  # another origin
            {"Origin": "null"},  # a sandboxed frame, a data: page, an old browser
            {"Origin": "null", "Sec-Fetch-Site": "cross-site"},  # a no-referrer attacker page
            {"Origin": manager.url, "Sec-Fetch-Site": "cross-site"},
            {"Origin": manager.url, "Sec-Fetch-Site": "same-site"},
        ):
            refused = client.post("/ui/sign-in", data=form, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
            assert "cross_origin" in refused.text
            assert "set-cookie" not in refused.headers
        for headers in (
            {"Origin": manager.url},
            # What a browser sends from the dashboard's own page (Referrer-Policy: no-referrer).
            {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
            {},  # no browser: no cross-site request to forge
        ):
            own = client.post("/ui/sign-in", data=form, headers=headers)
            assert own.status_code == 303 and COOKIE in own.headers["set-cookie"], headers


@pytest.fixture
def failures_forgotten(manager: Manager) -> Iterator[None]:
    """The count of wrong sign-ins from 127.0.0.1 removed afterwards: the Redis (and the address)
    are shared with the other tests' managers."""
    yield
    with closing(redis.Redis.from_url(manager.redis_url)) as client:
        client.delete(f"{FAILURES_PREFIX}127.0.0.1")


def test_a_burst_of_wrong_sign_ins_is_limited(manager: Manager, failures_forgotten: None) -> None:
    user, api = manager.new_user()
    api.close()
    with httpx.Client(base_url=manager.url, timeout=30) as client:
        answers = [
            client.post("/ui/sign-in", data={"credential": f"bf_wrong-{n}"}) for n in range(50)
        ]
        codes = [answer.status_code for answer in answers]
        assert codes[0] == 401 and codes[-1] == 429, codes
        assert set(codes) == {401, 429} and codes.index(429) <= 25, codes
        limited = answers[-1]
        assert "too_many_auth_failures" in limited.text
        assert int(limited.headers["retry-after"]) >= 1
        # Refused before the key is read: the right key waits too.
        right = client.post("/ui/sign-in", data={"credential": user["api_key"]})
        assert right.status_code == 429 and "set-cookie" not in right.headers


def test_a_deep_or_non_finite_config_in_a_form_is_refused_like_the_api(manager: Manager) -> None:
    """The API's body guard never sees a form field: the dashboard checks its JSON fields the
    same way (a 20,000-deep config once reached json.loads, whose recursion ends in a 500)."""
    user, api = manager.new_user()
    api.close()
    client, csrf = ui_client(manager.url, user["api_key"])
    with closing(client):
        for config, shown in (
            ("[" * 20_000 + "]" * 20_000, "nested deeper"),
            ('{"n": NaN}', "NaN"),
        ):
            answer = client.post(
                "/ui/bots/new", data={"csrf_token": csrf, "bot": "demo", "config": config}
            )
            assert answer.status_code == 422, (answer.status_code, answer.text[-500:])
            assert shown in answer.text
        assert "Traceback" not in manager.log_tail(400)
