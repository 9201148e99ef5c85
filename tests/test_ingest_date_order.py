"""An order shipped before it was placed (or delivered before that) is refused on every route
that writes through the commerce service, as delivered-before-shipped already was: a CSV row
error naming the file's column, a 422 naming the API's field. The same day is fine; the order's
day is its calendar day in Japan, as shipped and delivered dates are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from kizuna.commerce.importers import ImportOptions, run_import
from kizuna.commerce.models import Order
from kizuna.commerce.services import OrderInput, UpsertOutcome, order_upsert
from tests.factories import make_customer
from tests.test_api_common import assert_error, full_access_client
from tests.test_ingest_future_dates import DATA, IMPORT, _api_body, _errors, _order, _rewritten

pytestmark = pytest.mark.django_db
JST = dt.timezone(dt.timedelta(hours=9))
ORDERED = dt.datetime(2026, 11, 20, 14, 0, tzinfo=JST)


def _upsert(data: OrderInput) -> UpsertOutcome:
    return order_upsert(customer=make_customer(), data=data, acting_user=IMPORT)[1]


def _refusal(data: OrderInput) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as excinfo:
        _upsert(data)
    return excinfo.value.message_dict


def test_shipped_before_the_order_date_is_refused() -> None:
    refused = _refusal(_order(ordered_at=ORDERED, shipped_on=dt.date(2026, 11, 10)))
    assert refused == {"shipped_on": ["出荷日が受注日より前です"]}
    assert not Order.objects.exists()


def test_shipped_the_day_it_was_ordered_is_fine() -> None:
    assert _upsert(_order(ordered_at=ORDERED, shipped_on=dt.date(2026, 11, 20))) == (
        UpsertOutcome.CREATED
    )


def test_the_order_day_is_the_day_in_japan_whatever_offset_was_sent() -> None:
    # 16:00 UTC on the 19th is 01:00 on the 20th in Japan: the order was placed on the 20th
    ordered = dt.datetime(2026, 11, 19, 16, 0, tzinfo=dt.UTC)
    refused = _refusal(_order(ordered_at=ordered, shipped_on=dt.date(2026, 11, 19)))
    assert refused == {"shipped_on": ["出荷日が受注日より前です"]}
    # 20:00 on the 20th in New York is the 21st in Japan: shipped on the 21st is the same day
    new_york = dt.datetime(2026, 11, 20, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    data = _order(number="1002", ordered_at=new_york, shipped_on=dt.date(2026, 11, 21))
    assert _upsert(data) == UpsertOutcome.CREATED


def test_delivered_before_the_order_date_is_refused_without_a_shipped_date() -> None:
    refused = _refusal(_order(ordered_at=ORDERED, delivered_on=dt.date(2026, 11, 19)))
    assert refused == {"delivered_on": ["お届け日が受注日より前です"]}


def test_cancelled_before_the_order_date_is_refused() -> None:
    refused = _refusal(
        _order(ordered_at=ORDERED, cancelled_at=dt.datetime(2026, 10, 20, 9, 0, tzinfo=JST))
    )
    assert refused == {"cancelled_at": ["キャンセル・返品日が受注日より前です"]}
    assert not Order.objects.exists()
    # cancelled the same day, even a little before the order's time (a cart's clocks): fine
    same_day = _order(ordered_at=ORDERED, cancelled_at=dt.datetime(2026, 11, 20, 13, 0, tzinfo=JST))
    assert _upsert(same_day) == UpsertOutcome.CREATED


def test_the_api_answers_422_naming_shipped_on() -> None:
    api = full_access_client()
    body = {**_api_body(ORDERED), "status": "shipped", "shipped_on": "2026-11-10"}
    error = assert_error(api.put("/api/v1/orders/1001", body), 422)
    assert error["fields"] == {"shipped_on": "出荷日が受注日より前です"}
    assert not Order.objects.exists()
    body["shipped_on"] = "2026-11-20"
    answer = api.put("/api/v1/orders/1001", body)
    assert answer.status_code == 201, answer.content


def test_a_csv_row_shipped_before_its_order_names_the_shipping_column(tmp_path: Path) -> None:
    # W-0001 was ordered on 2026/05/01; its 出荷日 typed as the month before
    path = _rewritten(tmp_path, "generic_orders.csv", '"2026/05/02"', '"2026/04/02"', "utf-8")
    result = run_import(
        path,
        ImportOptions(kind="orders", format="generic", mapping=DATA / "generic_orders.yml"),
    )
    assert _errors(result) == [(2, "出荷日", "W-0001", "出荷日が受注日より前です")]
    assert not Order.objects.filter(number="W-0001").exists()
    assert Order.objects.exists()  # the other orders are imported
