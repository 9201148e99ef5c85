"""`kizuna analytics backtest`: fit on a calibration period, compare with the holdout.

None of these tests may touch the database (they are not marked django_db, so pytest-django
fails any query): the back-test is for analysts with nothing but a file.
"""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kizuna.analytics.clv import bgnbd
from tests.clv_cdnow import CALIBRATION_END, HOLDOUT_END, cdnow_transactions, cdnow_weeks


def _backtest(*args: str) -> str:
    out = io.StringIO()
    call_command("analytics", "backtest", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture(scope="module")
def cdnow_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tx = cdnow_transactions()
    path = tmp_path_factory.mktemp("cdnow") / "cdnow.csv"
    pd.DataFrame({"会員番号": tx.customer, "注文日": tx.day.astype(str), "金額": tx.amount}).to_csv(
        path, index=False
    )
    return path


CDNOW_ARGS = (
    "--columns",
    "customer=会員番号,date=注文日,amount=金額",
    "--calibration-end",
    CALIBRATION_END.isoformat(),
    "--holdout-end",
    HOLDOUT_END.isoformat(),
)


def test_backtest_on_cdnow_fits_the_published_model_and_counts_the_holdout(cdnow_csv: Path) -> None:
    result = json.loads(
        _backtest("--transactions", str(cdnow_csv), *CDNOW_ARGS, "--unit", "week", "--json")
    )
    # the published BG/NBD parameters (Fader, Hardie & Lee 2005)
    assert result["customers"] == 2357
    assert result["params"]["r"] == pytest.approx(0.243, rel=0.01)
    assert result["params"]["alpha"] == pytest.approx(4.414, rel=0.01)
    assert result["log_likelihood"] == pytest.approx(-9582.4, abs=0.1)
    assert result["holdout_length"] == 39
    # actual holdout purchases: distinct (customer, day) after week 39, counted here by pandas
    raw = pd.read_csv(cdnow_csv)
    raw["day"] = pd.to_datetime(raw["注文日"])
    days = raw.drop_duplicates(["会員番号", "day"])
    in_holdout = (days["day"] > pd.Timestamp(CALIBRATION_END)) & (
        days["day"] <= pd.Timestamp(HOLDOUT_END)
    )
    assert result["actual_total"] == in_holdout.sum()
    # by number of calibration repeat purchases: customers and actual purchases per bucket
    calibration = days[days["day"] <= pd.Timestamp(CALIBRATION_END)]
    repeat = (calibration.groupby("会員番号").size() - 1).clip(upper=7)
    holdout = days[in_holdout].groupby("会員番号").size().reindex(repeat.index, fill_value=0)
    table = result["by_frequency"]
    assert [row["repeat_purchases"] for row in table] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert [row["customers"] for row in table] == repeat.value_counts().sort_index().tolist()
    assert [row["actual"] for row in table] == holdout.groupby(repeat).sum().tolist()
    # predictions are the model's conditional expectations, summed
    summary = cdnow_weeks()
    params = bgnbd.fit(summary.x, summary.t_x, summary.T)
    expected = bgnbd.expected_purchases(params, 39.0, summary.x, summary.t_x, summary.T)
    assert result["predicted_total"] == pytest.approx(expected.sum(), rel=1e-6)
    assert sum(row["predicted"] for row in table) == pytest.approx(expected.sum(), rel=1e-9)
    # and the spend model is the published Gamma-Gamma
    assert result["spend"]["params"]["p"] == pytest.approx(6.25, rel=0.01)
    assert result["spend"]["fitted_customers"] == 946


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto"])
def test_every_model_prints_a_japanese_report(cdnow_csv: Path, model: str) -> None:
    text = _backtest("--transactions", str(cdnow_csv), *CDNOW_ARGS, "--model", model)
    for label in ("推定パラメータ", "対数尤度", "検証期間の購入回数", "実績", "予測", "7+"):
        assert label in text
    assert "時間の単位: 日" in text
    assert "収束: はい" in text


# A tiny shop: (customer, [calibration days in January–March 2024], holdout purchase days)
TINY = {
    "a": (["2024-01-05"], ["2024-04-10"]),
    "b": (["2024-01-10", "2024-02-10"], []),
    "c": (["2024-01-01", "2024-01-20", "2024-03-01"], ["2024-04-02", "2024-05-02"]),
    "d": ([f"2024-01-{d:02d}" for d in range(1, 9)], ["2024-04-01", "2024-05-01", "2024-06-01"]),
    "e": ([f"2024-02-{d:02d}" for d in range(1, 10)], []),
    "f": (["2024-03-15", "2024-03-15"], ["2024-06-30", "2024-07-01"]),
}


def test_backtest_on_a_tiny_file_has_the_counts_worked_out_by_hand(tmp_path: Path) -> None:
    rows = [
        (customer, day, 1000)
        for customer, (calibration, holdout) in TINY.items()
        for day in calibration + holdout
    ]
    path = tmp_path / "tiny.csv"
    pd.DataFrame(rows, columns=["customer_id", "date", "amount"]).to_csv(path, index=False)
    result = json.loads(
        _backtest(
            "--transactions",
            str(path),
            "--calibration-end",
            "2024-03-31",
            "--holdout-end",
            "2024-06-30",
            "--json",
        )
    )
    # a: 0 repeat, 1 later; b: 1, 0; c: 2, 2; d: 7, 3; e: 8, 0; f: 0 (same day twice), 1
    # (f's 2024-07-01 is after the holdout)
    assert result["customers"] == 6
    assert result["holdout_length"] == 91
    assert result["actual_total"] == 7
    table = {row["repeat_purchases"]: row for row in result["by_frequency"]}
    assert (table["0"]["customers"], table["0"]["actual"]) == (2, 2)
    assert (table["1"]["customers"], table["1"]["actual"]) == (1, 0)
    assert (table["2"]["customers"], table["2"]["actual"]) == (1, 2)
    assert (table["7+"]["customers"], table["7+"]["actual"]) == (2, 3)
    assert all(table[k]["customers"] == 0 for k in ("3", "4", "5", "6"))
    assert result["first_purchase"] == "2024-01-01"
    # every customer's prediction is a number of purchases, never negative
    assert all(row["predicted"] >= 0 for row in result["by_frequency"])


def test_bad_input_gets_a_clear_japanese_error(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("customer_id,date\nA,2024-01-01\nA,2024-02-01\n", encoding="utf-8")
    dates = ("--calibration-end", "2024-03-31", "--holdout-end", "2024-06-30")
    with pytest.raises(CommandError, match="見つかりません"):
        _backtest("--transactions", str(tmp_path / "missing.csv"), *dates)
    with pytest.raises(CommandError, match="より後の日付"):
        _backtest(
            "--transactions",
            str(good),
            "--calibration-end",
            "2024-03-31",
            "--holdout-end",
            "2024-03-01",
        )
    with pytest.raises(CommandError, match="列 金額 がありません"):
        _backtest("--transactions", str(good), "--columns", "amount=金額", *dates)
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        _backtest(
            "--transactions", str(good), "--calibration-end", "3月末", "--holdout-end", "2024-06-30"
        )
    with pytest.raises(CommandError, match="較正期間内の購入がありません"):
        _backtest(
            "--transactions",
            str(good),
            "--calibration-end",
            "2023-12-31",
            "--holdout-end",
            "2024-06-30",
        )
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,date\nA,2024-01-01\nB,not a date\n", encoding="utf-8")
    with pytest.raises(CommandError, match="行 3"):
        _backtest("--transactions", str(bad), *dates)


def test_run_and_report_hand_over_to_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    from kizuna.analytics.management.commands import analytics

    # without the pipeline module, a clear message
    monkeypatch.setattr(analytics, "PIPELINE_CLI", "kizuna_test_no_such_pipeline.cli")
    with pytest.raises(CommandError, match="まだ使えません"):
        call_command("analytics", "run")
    # with it, the options are handed over
    calls: list[tuple[str, dict[str, Any]]] = []
    fake = types.ModuleType("kizuna_test_pipeline_cli")
    fake.run_command = lambda options: calls.append(("run", options))  # type: ignore[attr-defined]
    fake.report_command = lambda options: calls.append(("report", options))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kizuna_test_pipeline_cli", fake)
    monkeypatch.setattr(analytics, "PIPELINE_CLI", "kizuna_test_pipeline_cli")
    call_command("analytics", "run", "--as-of", "2024-06-30", "--backend", "postgres")
    call_command("analytics", "run", "--enqueue")
    call_command(
        "analytics", "report", "--transactions", "t.csv", "--as-of", "2024-06-30", "--out", "out"
    )
    assert [name for name, _ in calls] == ["run", "run", "report"]
    assert str(calls[0][1]["as_of"]) == "2024-06-30"
    assert calls[0][1]["backend"] == "postgres"
    assert calls[1][1]["enqueue"] is True
    assert str(calls[2][1]["out"]) == "out"
    with pytest.raises(CommandError, match="not allowed with"):
        call_command("analytics", "run", "--enqueue", "--schedule-nightly")


def test_weeks_and_days_give_the_same_model(cdnow_csv: Path) -> None:
    weeks = json.loads(
        _backtest("--transactions", str(cdnow_csv), *CDNOW_ARGS, "--unit", "week", "--json")
    )
    days = json.loads(_backtest("--transactions", str(cdnow_csv), *CDNOW_ARGS, "--json"))
    # α is a time scale: in days it is seven times the weekly value; the rest is unchanged
    assert days["params"]["alpha"] == pytest.approx(7 * weeks["params"]["alpha"], rel=1e-4)
    assert days["params"]["r"] == pytest.approx(weeks["params"]["r"], rel=1e-4)
    assert days["predicted_total"] == pytest.approx(weeks["predicted_total"], rel=1e-4)
    assert np.isclose(days["actual_total"], weeks["actual_total"])
