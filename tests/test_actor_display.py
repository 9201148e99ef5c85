"""Who did something, as staff read it on pages: system processes in Japanese words."""

from __future__ import annotations

import pytest

from kizuna.core.audit import Actor, actor_display


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("hanako", "hanako"),
        (Actor.system("delivery-worker").label, "システム(配信ワーカー)"),
        (Actor.system("erasure").label, "システム(削除(匿名化))"),
        ("system:webhook:ec-cube", "システム(Webhook ec-cube)"),
        ("system:customers-command(root)", "システム(顧客コマンド root)"),
    ],
)
def test_an_actor_label_is_shown_in_words(label: str, shown: str) -> None:
    assert actor_display(label) == shown
