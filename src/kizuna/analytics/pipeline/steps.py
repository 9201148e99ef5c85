"""The pipeline's named steps: their labels and the clock that times them.

Kept apart from `compute` (and free of numpy, Ibis and the engines) because pages show a run's
progress and timings with these labels, and the web and API processes must not load the
pipeline to do so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

STEP_LABELS: dict[str, str] = {
    "extract": "業務データの読み出し",
    "load": "分析エンジンへの読み込み",
    "summary": "顧客別集計・RFM・CPM",
    "predictions": "予測モデル(購入回数・生存確率・CLV)",
    "repeat": "リピート指標(F2転換率・リピート率・引き上げ率)",
    "cohorts": "コホート(継続率・累計LTV)",
    "subscriptions": "定期(回数別継続率・解約率)",
    "dynamics": "顧客数の推移・予測",
    "fans": "ファン化指標",
    "store": "スナップショットの保存",
}

OnStep = Callable[[str, int, int], None]


class StepClock:
    """Times named steps and tells `on_step(name, index, total)` when each one starts."""

    def __init__(self, names: list[str], on_step: OnStep | None = None) -> None:
        self.names = names
        self.on_step = on_step
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.on_step is not None:
            self.on_step(name, self.names.index(name), len(self.names))
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 3)
