"""What the people running Kizuna see: the worker saying what it did, and a page (not a blank
screen) for an address that only a button may open."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.scheduler import ScenarioReport, TickReport
from kizuna.campaigns.delivery import BatchResult
from kizuna.core.management.commands import worker
from kizuna.customers.models import ConsentChannel, IdentityKind
from kizuna.loyalty.tasks import expire_points
from tests.delivery_support import consenting_customer, mail, open_all_day
from tests.factories import add_identity

# --- `kizuna worker`: one line per pass that did something -------------------------------------


def run_worker(*args: str) -> str:
    out = io.StringIO()
    call_command("worker", "--once", *args, stdout=out)
    return out.getvalue()


def queue_calls() -> None:
    """Two calls the worker can put on the call list, one it must pass over (no phone)."""
    for key, number in (("call-a", "+819014766918"), ("call-b", "+81663451234")):
        customer = consenting_customer(email_address=None, channels=(ConsentChannel.PHONE,))
        add_identity(customer, IdentityKind.PHONE, number)
        mail(customer, key, channel="call", content={"reason": "ご確認", "script": "…"})
    without_phone = consenting_customer(email_address=None, channels=(ConsentChannel.PHONE,))
    mail(without_phone, "call-c", channel="call", content={"reason": "ご確認", "script": "…"})


@pytest.mark.django_db(transaction=True)
def test_worker_once_says_what_it_sent_without_customer_data() -> None:
    # given two calls to list and one that cannot go out, and a point-expiry task queued
    open_all_day()
    queue_calls()
    expire_points.enqueue()
    # when cron runs the worker once
    output = run_worker()
    # then one Japanese line says what happened, in counts only: no name or number (D3)
    assert output == "送信 2件・見送り 1件・失敗 0件、タスク 1件\n"
    # and a second run, with nothing due, prints nothing (cron mails no empty news)
    assert run_worker() == ""


@pytest.mark.django_db(transaction=True)
def test_worker_verbosity_zero_is_silent() -> None:
    open_all_day()
    queue_calls()
    assert run_worker("-v", "0") == ""


def fake_tick(*scenarios: ScenarioReport, ran: bool = True) -> Callable[[], TickReport]:
    def tick() -> TickReport:
        return TickReport(now=timezone.now(), ran=ran, holder="test", scenarios=list(scenarios))

    return tick


@pytest.mark.django_db(transaction=True)
def test_worker_reports_a_scenario_run_that_did_something(monkeypatch: pytest.MonkeyPatch) -> None:
    did_work = fake_tick(
        ScenarioReport(key="welcome", enrolled=3, queued=3),
        ScenarioReport(key="win-back", pending_confirmation=4),
        ScenarioReport(key="broken", error="KeyError: 'x'"),
    )
    monkeypatch.setattr(worker, "scheduler_tick", lambda: did_work)
    assert run_worker() == "シナリオ実行 済・確認待ち 4件・エラー 1件\n"


@pytest.mark.django_db(transaction=True)
def test_worker_is_quiet_for_a_scenario_run_that_changed_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the minute-by-minute tick of the long-running worker: active scenarios, nothing due
    idle = fake_tick(ScenarioReport(key="welcome"), ScenarioReport(key="win-back"))
    monkeypatch.setattr(worker, "scheduler_tick", lambda: idle)
    assert run_worker() == ""
    # another worker's scheduler holds the lease: not this worker's news either
    monkeypatch.setattr(worker, "scheduler_tick", lambda: fake_tick(ran=False))
    assert run_worker() == ""


@pytest.mark.django_db(transaction=True)
def test_worker_says_when_the_scenario_run_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(worker, "scheduler_tick", lambda: broken)
    assert run_worker() == "シナリオ実行 失敗\n"


def test_worker_line_names_the_rarer_delivery_outcomes_only_when_they_happened() -> None:
    result = BatchResult(claimed=9, sent=5, deferred=2, retried=1, released=1)
    assert worker.delivery_summary(result) == (
        "送信 5件・見送り 0件・失敗 0件・延期 2件・再試行待ち 1件・送信待ちに戻し 1件"
    )


# --- a GET on a POST-only address ---------------------------------------------------------------

# The address and its Allow header (the logout view also answers OPTIONS).
POST_ONLY = [("outbox:settings", "POST"), ("outbox:pause", "POST"), ("logout", "POST, OPTIONS")]
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.mark.parametrize(("url_name", "allow"), POST_ONLY)
def test_opening_a_post_only_address_shows_a_japanese_page(
    client_for: Callable[[Role], Client], url_name: str, allow: str
) -> None:
    # when an admin opens the address of a button from a bookmark
    response = client_for(Role.ADMIN).get(reverse(url_name), headers=BROWSER)
    # then it is still a 405 naming the method to use, now with a page that leads home
    assert response.status_code == 405
    assert response["Allow"] == allow
    assert response["Content-Type"] == "text/html; charset=utf-8"
    page = response.content.decode()
    assert "このページは直接開けません" in page
    assert f'href="{reverse("web:home")}"' in page


def test_a_client_that_wants_no_html_gets_the_empty_405(
    client_for: Callable[[Role], Client],
) -> None:
    response = client_for(Role.ADMIN).get(reverse("outbox:pause"), headers={"Accept": "text/csv"})
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.content == b""


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [BROWSER, {"Accept": "application/json"}])
def test_the_api_answers_a_wrong_method_with_its_own_json_error(
    client: Client, headers: dict[str, str]
) -> None:
    # even when the client is a browser: the API's answers are for programs, in the one error
    # shape every other API error has (not django-ninja's plain "Method not allowed")
    response = client.get(reverse("api-v1:ingest_events"), headers=headers)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "error": {
            "code": "method_not_allowed",
            "message": "このURLではこのメソッドは使えません",
            "fields": {},
        }
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/customers/", "/api/v1/orders/a%2Fb"])
def test_an_address_no_api_route_has_gets_the_api_error_not_a_page(
    client: Client, path: str
) -> None:
    response = client.get(path, headers=BROWSER)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"
    # the site's own pages keep their Japanese 404 page
    page = client.get("/no-such-page/", headers=BROWSER)
    assert page.status_code in (302, 404)
    assert not page.get("Content-Type", "").startswith("application/json")


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["campaigns", "bounce", "/no/such/bounces.json"], 1, "エラー: ファイルがありません"),
        (["campaigns", "bonce", "x.json"], 2, "エラー: action に 'bonce' は指定できません"),
    ],
)
def test_the_campaigns_command_refuses_in_japanese(
    tmp_path: Path, args: list[str], code: int, said: str
) -> None:
    done = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "kizuna", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KIZUNA_DATA_DIR": str(tmp_path)},
        check=False,
    )
    assert done.returncode == code
    assert said in done.stderr
    assert "CommandError" not in done.stderr
    assert "Errno" not in done.stderr


def test_a_bounce_file_not_in_utf8_is_refused_in_japanese(tmp_path: Path) -> None:
    # an export saved by Excel on a Japanese PC (CP932) used to end in a traceback
    path = tmp_path / "不達.json"
    path.write_bytes(
        '[{"type": "bounce", "email": "a@example.jp", "detail": "宛先不明"}]'.encode("cp932")
    )
    done = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "kizuna", "campaigns", "bounce", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "KIZUNA_DATA_DIR": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 1
    assert "エラー: ファイルはUTF-8で保存してください" in done.stderr
    assert "Traceback" not in done.stderr
