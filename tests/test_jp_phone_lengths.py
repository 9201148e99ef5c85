"""A Japanese phone number of the wrong length for its kind (090-1234-567, a mobile number one
digit short) is refused wherever numbers come in, with a message saying how many digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from kizuna.customers.models import Customer, Identity, IdentityKind
from tests.test_api_common import assert_error, full_access_client
from tests.test_import_lengths import _errors
from tests.test_import_row_checks import _eccube, _orders

pytestmark = pytest.mark.django_db
MOBILE_LENGTH = "電話番号の桁数が正しくありません(070・080・090・050・020 で始まる番号は11桁です)"


def test_the_api_refuses_a_mobile_number_one_digit_short(db: None) -> None:
    api = full_access_client()
    body = {"identities": {"phone": "090-1234-567"}, "profile": {"family_name": "山田"}}
    error = assert_error(api.post("/api/v1/customers", body), 422, "invalid_request")
    assert error["fields"] == {"identities.phone": MOBILE_LENGTH}
    assert not Customer.objects.exists()
    body["identities"]["phone"] = "090-1234-5678"
    assert api.post("/api/v1/customers", body).status_code == 201


def test_an_import_row_with_a_mobile_number_one_digit_short_is_a_row_error(
    tmp_path: Path,
) -> None:
    # given the golden EC-CUBE file, whose order 1002 (lines 6-7) has TEL 090-1234-567
    result = _eccube(tmp_path, {6: {"TEL": "090-1234-567"}, 7: {"TEL": "090-1234-567"}})
    # then the row is reported against TEL with the message (its order's other row with it),
    # and the other orders import
    assert _errors(result) == [
        (6, "TEL", MOBILE_LENGTH),
        (7, "", "同じ注文の6行目に誤りがあるため、この行も取り込みません"),
    ]
    assert _orders() == {"1001", "1003", "1005"}  # 1004 is 購入処理中, never imported
    assert not Identity.objects.filter(kind=IdentityKind.PHONE, value="+81901234567").exists()
