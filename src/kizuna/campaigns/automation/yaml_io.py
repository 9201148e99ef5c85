"""Scenarios as a YAML file: `kizuna scenarios export FILE.yml` / `load FILE.yml`.

The file holds every segment, message template, offer and scenario, each identified by its
`key`, in a stable order with stable formatting, so it diffs well in version control and
export → load into an empty database → export gives the same bytes. Loading is all-or-nothing
(one transaction, every problem reported with its place in the file) and idempotent: an entry
equal to what the database holds is not written again.

    version: 1
    segments:
    - key: trial-buyers
      name: トライアル購入者
      description: ''
      rules: {op: and, rules: [...]}
    templates:
    - key: thanks
      name: …
      subject: '{{ name }} 様、ご購入ありがとうございます'
      text: |
        …
      html: ''
    offers:
    - {key: welcome, name: …, kind: yen_off, value: 1000, code: WELCOME, valid_days: 14}
    scenarios:
    - key: trial-step-mail
      name: …
      description: ''
      status: active
      trigger: {kind: first_purchase, product_kind: trial}
      audience: null
      holdout_percent: 10
      purpose: marketing
      exit_on: [purchase]
      first_use_days: 3
      attribution_days: 30
      steps:
      - {key: thanks, anchor: delivery, offset_days: 0, send_time: '10:00', repeat_monthly: 0,
         channel: email, template: thanks, offer: null, condition: null}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import yaml
from django.db import transaction
from django.utils import timezone

from kizuna.campaigns.automation import segments as segment_rules
from kizuna.campaigns.automation.models import (
    MessageTemplate,
    Offer,
    Scenario,
    ScenarioStatus,
    Segment,
)
from kizuna.campaigns.automation.segments import name_key, name_taken
from kizuna.campaigns.automation.services import (
    ScenarioError,
    entrants_while_paused,
    offer_save,
    scenario_save,
    scenario_set_status,
    template_save,
    validate_scenario,
)
from kizuna.core import yamlfile

FORMAT_VERSION = 1
SECTIONS = ("segments", "templates", "offers", "scenarios")
# What to do, on resuming a paused 「セグメントに入った」 scenario, with those who entered its
# segment while it was stopped: the choice of the 稼働させる confirmation's two buttons.
PAUSE_ENTRANTS = ("send", "skip")


class ScenarioFileError(ValueError):
    """A file that cannot be loaded; `messages` name each problem's place in the file."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


# --- export -----------------------------------------------------------------------------------


def segment_entry(segment: Segment) -> dict[str, Any]:
    return {
        "key": segment.key,
        "name": segment.name,
        "description": segment.description,
        "rules": _sorted_keys(segment.rules),
    }


def _sorted_keys(value: Any) -> Any:
    """JSON with every object's keys in order: PostgreSQL's jsonb stores them reordered
    (shortest first) and SQLite as written, and the file must not depend on the database."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def template_entry(template: MessageTemplate) -> dict[str, Any]:
    return {
        "key": template.key,
        "name": template.name,
        "subject": template.subject,
        "text": template.text,
        "html": template.html,
    }


def offer_entry(offer: Offer) -> dict[str, Any]:
    return {
        "key": offer.key,
        "name": offer.name,
        "kind": offer.kind,
        "value": offer.value,
        "code": offer.code,
        "valid_days": offer.valid_days,
    }


def scenario_entry(scenario: Scenario) -> dict[str, Any]:
    steps = scenario.steps.select_related("template", "offer", "condition").order_by("position")
    return {
        "key": scenario.key,
        "name": scenario.name,
        "description": scenario.description,
        "status": scenario.status,
        "trigger": {"kind": scenario.trigger_kind, **dict(sorted(scenario.trigger_params.items()))},
        "audience": scenario.audience.key if scenario.audience else None,
        "holdout_percent": scenario.holdout_percent,
        "purpose": scenario.purpose,
        "exit_on": sorted(scenario.exit_on),
        "first_use_days": scenario.first_use_days,
        "attribution_days": scenario.attribution_days,
        "steps": [
            {
                "key": s.key,
                "anchor": s.anchor,
                "offset_days": s.offset_days,
                "send_time": s.send_time.strftime("%H:%M") if s.send_time else None,
                "repeat_monthly": s.repeat_monthly,
                "channel": s.channel,
                "template": s.template.key,
                "offer": s.offer.key if s.offer else None,
                "condition": s.condition.key if s.condition else None,
            }
            for s in steps
        ],
    }


def export_document() -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "segments": [segment_entry(s) for s in Segment.objects.order_by("key")],
        "templates": [template_entry(t) for t in MessageTemplate.objects.order_by("key")],
        "offers": [offer_entry(o) for o in Offer.objects.order_by("key")],
        "scenarios": [
            scenario_entry(s) for s in Scenario.objects.select_related("audience").order_by("key")
        ],
    }


class _Dumper(yaml.SafeDumper):
    """Block style, and multi-line text as literal blocks so message bodies read as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def export_yaml() -> str:
    return yaml.dump(
        export_document(),
        Dumper=_Dumper,
        allow_unicode=True,
        sort_keys=False,
        default_flow_style=False,
        width=100,
    )


# --- load -------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))

    def summary(self) -> str:
        labels = {
            "segments": "セグメント",
            "templates": "テンプレート",
            "offers": "オファー",
            "scenarios": "シナリオ",
        }
        return "、".join(
            f"{labels[s]} 新規{self.created[s]}・更新{self.updated[s]}・変更なし{self.unchanged[s]}"
            for s in SECTIONS
        )


def parse(text: str) -> dict[str, Any]:
    try:
        document = yamlfile.load(text)
    except yamlfile.YamlError as exc:
        raise ScenarioFileError([f"YAMLとして読めません。{exc}"]) from exc
    if not isinstance(document, dict):
        raise ScenarioFileError(["ファイルの形式が正しくありません(version と各一覧が必要です)"])
    if document.get("version") != FORMAT_VERSION:
        raise ScenarioFileError([f"version は {FORMAT_VERSION} にしてください"])
    problems = [
        f"{name}: 一覧(- で始まる項目の並び)にしてください"
        for name in SECTIONS
        if not isinstance(document.get(name) or [], list)
    ]
    unknown = sorted(set(document) - {"version", *SECTIONS})
    problems += [f"不明な項目です: {name}" for name in unknown]
    if problems:
        raise ScenarioFileError(problems)
    return document


def load_yaml(text: str, *, acting_user: Any, pause_entrants: str | None = None) -> LoadReport:
    """Load a scenario file; all or nothing. Raises ScenarioFileError listing every problem.

    `pause_entrants` (PAUSE_ENTRANTS): for every paused 「セグメントに入った」 scenario the file
    resumes, send to those who entered its segment while it was stopped too, or skip them.
    Without it, a file resuming one that has any is refused, as 稼働させる asks first."""
    document = parse(text)
    report = LoadReport()
    errors: list[str] = []
    with transaction.atomic():
        for section, loader in (
            ("segments", _load_segment),
            ("templates", _load_template),
            ("offers", _load_offer),
            ("scenarios", partial(_load_scenario, pause_entrants=pause_entrants)),
        ):
            first: dict[str, int] = {}  # key -> index of the entry that used it first
            clashes = _name_clashes(section, document.get(section) or [])
            for index, entry in enumerate(document.get(section) or [], start=1):
                where = f"{section}[{index}]"
                if not isinstance(entry, Mapping):
                    errors.append(f"{where}: 形式が正しくありません")
                    continue
                if "key" in entry:
                    key = str(entry["key"])
                    where = f"{where}(key: {key})"
                    if key in first:
                        # Loading it would overwrite the first entry with the second.
                        errors.append(f"{where}: key が {section}[{first[key]}] と同じです")
                        continue
                    first[key] = index
                if index in clashes:
                    errors.append(f"{where}: {clashes[index]}")
                try:
                    outcome = loader(entry, acting_user)
                except (ScenarioError, segment_rules.SegmentError) as exc:
                    errors.extend(f"{where}: {m}" for m in exc.messages)
                    continue
                except (TypeError, ValueError):
                    # Python's own words ("unhashable type: 'list'") would not help staff.
                    errors.append(
                        f"{where}: 値の書き方が正しくありません(一覧や対応表を書く"
                        "場所ではない項目に書いていないか確認してください)"
                    )
                    continue
                getattr(report, outcome)[section] += 1
        if errors:
            transaction.set_rollback(True)
            raise ScenarioFileError(errors)
    return report


NAMED: dict[str, tuple[type[Segment | MessageTemplate | Offer | Scenario], str]] = {
    "segments": (Segment, "セグメント"),
    "templates": (MessageTemplate, "テンプレート"),
    "offers": (Offer, "オファー"),
    "scenarios": (Scenario, "シナリオ"),
}


def _name_clashes(section: str, entries: list[Any]) -> dict[int, str]:
    """Names that would clash (segments.name_key) once the file is loaded, by the index of the
    entry told: checked against the final state — the file's names and those of the rows it
    leaves out — not entry by entry against the database, so a file may swap two names. As
    segments.name_error: only a new or changed name is checked (two rows that shared a name
    before the rule keep it), and of two entries given one name, the later is told. The
    loaders save with check_name=False."""
    model, label = NAMED[section]
    stored = dict(model._default_manager.order_by("pk").values_list("key", "name"))
    in_file: dict[str, tuple[int, str, bool]] = {}  # key -> (index, name, checked)
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping) or "key" not in entry or str(entry["key"]) in in_file:
            continue  # refused by load_yaml
        key = str(entry["key"])
        try:
            name = _text(entry, "name").strip()
        except ScenarioError:
            continue  # refused by the loader
        if name:
            checked = key not in stored or name_key(name) != name_key(stored[key])
            in_file[key] = (index, name, checked)
    rows = [(key, name) for key, name in stored.items() if key not in in_file]
    clashes: dict[int, str] = {}
    for key, (index, name, checked) in in_file.items():
        if not checked:
            continue
        others = rows + [
            (other_key, other_name)
            for other_key, (other_index, other_name, other_checked) in in_file.items()
            if other_key != key and (other_index < index or not other_checked)
        ]
        for other_key, other_name in others:
            if name_key(other_name) == name_key(name):
                clashes[index] = name_taken(name, label=label, other=other_name, key=other_key)
                break
    return clashes


def _fields(entry: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ScenarioError([f"不明な項目です: {', '.join(unknown)}"])


def _text(entry: Mapping[str, Any], name: str) -> str:
    """A text field. A list or mapping there (a stray `- ` or `: ` in the file) is refused:
    stored, it would read as Python's "['…']"."""
    value = entry.get(name)
    if value is None:
        return ""
    if isinstance(value, Mapping | list):
        raise ScenarioError(
            [f"{name} は文字で書いてください(一覧や「項目: 値」の形になっています)"]
        )
    return str(value)


def _no_booleans(entry: Mapping[str, Any], names: tuple[str, ...], where: str = "") -> None:
    """Refuses `true` / `false` for a number: YAML reads them as booleans, which Python counts
    as 1 and 0, so `value: true` would be saved as 1 without a word."""
    wrong = [name for name in names if isinstance(entry.get(name), bool)]
    if wrong:
        raise ScenarioError(
            [f"{where}{name} は数字で書いてください(true・false は使えません)" for name in wrong]
        )


def _load_segment(entry: Mapping[str, Any], actor: Any) -> str:
    _fields(entry, ("key", "name", "description", "rules"))
    existing = Segment.objects.filter(key=entry.get("key")).first()
    values: dict[str, Any] = {
        "name": _text(entry, "name"),
        "description": _text(entry, "description"),
        "rules": entry.get("rules") or {},
    }
    if existing is not None and _same(segment_entry(existing), values):
        return "unchanged"
    segment_rules.segment_save(
        segment=existing, key=_text(entry, "key"), **values, acting_user=actor, check_name=False
    )
    return "created" if existing is None else "updated"


def _same(stored: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Whether saving `values` would leave the stored entry as it is.

    `values` are what the loader would save — a field the file leaves out already given its
    default — so an entry that omits a default is "unchanged", not written (and audited) on
    every load, and one that omits a field whose stored value is not the default is written."""
    return all(stored[name] == value for name, value in values.items())


def _load_template(entry: Mapping[str, Any], actor: Any) -> str:
    _fields(entry, ("key", "name", "subject", "text", "html"))
    existing = MessageTemplate.objects.filter(key=entry.get("key")).first()
    values = {name: _text(entry, name) for name in ("name", "subject", "text", "html")}
    if existing is not None and _same(template_entry(existing), values):
        return "unchanged"
    template_save(
        template=existing, key=_text(entry, "key"), **values, acting_user=actor, check_name=False
    )
    return "created" if existing is None else "updated"


def _load_offer(entry: Mapping[str, Any], actor: Any) -> str:
    _fields(entry, ("key", "name", "kind", "value", "code", "valid_days"))
    _no_booleans(entry, ("value", "valid_days"))
    existing = Offer.objects.filter(key=entry.get("key")).first()
    values = {
        "name": _text(entry, "name"),
        "kind": _text(entry, "kind"),
        "value": entry.get("value", 0),
        "code": _text(entry, "code"),
        "valid_days": entry.get("valid_days", 14),
    }
    if existing is not None and _same(offer_entry(existing), values):
        return "unchanged"
    offer_save(
        offer=existing, key=_text(entry, "key"), **values, acting_user=actor, check_name=False
    )
    return "created" if existing is None else "updated"


def _move(
    scenario: Scenario, status: str, actor: Any, name: str, *, new: bool, skip: bool = False
) -> Scenario:
    try:
        return scenario_set_status(
            scenario=scenario, status=status, acting_user=actor, new=new, skip_paused_entrants=skip
        )
    except ScenarioError as exc:
        raise ScenarioError([f"シナリオ「{name}」: {m}" for m in exc.messages]) from exc


SCENARIO_FIELDS = (
    "key",
    "name",
    "description",
    "status",
    "trigger",
    "audience",
    "holdout_percent",
    "purpose",
    "exit_on",
    "first_use_days",
    "attribution_days",
    "steps",
)


def _load_scenario(entry: Mapping[str, Any], actor: Any, *, pause_entrants: str | None) -> str:
    _fields(entry, SCENARIO_FIELDS)
    _no_booleans(entry, ("holdout_percent", "first_use_days", "attribution_days"))
    steps = entry.get("steps")
    for index, step in enumerate(steps if isinstance(steps, list) else [], start=1):
        if isinstance(step, Mapping):
            _no_booleans(step, ("offset_days", "repeat_monthly"), f"steps[{index}] の ")
    existing = Scenario.objects.filter(key=entry.get("key")).first()
    # Left out, the status stays as it is: a hand-written file that changes a step must not
    # stop a running scenario. A new scenario starts as a draft.
    status = entry.get("status", existing.status if existing else ScenarioStatus.DRAFT)
    if status not in ScenarioStatus.values:
        raise ScenarioError(["status は draft・active・paused・archived のいずれかにしてください"])
    spec = {name: entry[name] for name in SCENARIO_FIELDS if name in entry and name != "status"}
    if existing is not None and existing.status == status:
        # Compared as scenario_save would store them (defaults filled in: a trigger parameter
        # or step field the file leaves out), not as written.
        cleaned, errors = validate_scenario(spec, scenario=existing)
        stored, _ = validate_scenario(scenario_entry(existing), scenario=existing)
        if not errors and cleaned == stored:
            return "unchanged"
    # The status moves as the scenario's page moves it (services.scenario_set_status): the
    # same refusals and audit rows. An archived scenario is not edited (its page refuses that
    # too): restored to 停止中 first when the file has it 停止中, refused otherwise.
    name = _text(entry, "name") or (existing.name if existing else "")
    if existing is not None and existing.status == ScenarioStatus.ARCHIVED:
        if status == ScenarioStatus.ARCHIVED:
            raise ScenarioError(
                [
                    f"シナリオ「{name}」はアーカイブしているため変更できません。"
                    "元に戻して(停止中にして)から変更してください"
                ]
            )
        # 停止中 restores it; 稼働中 or 下書き straight from アーカイブ is refused by _move
        existing = _move(existing, status, actor, name, new=False)
    scenario = scenario_save(scenario=existing, spec=spec, acting_user=actor, check_name=False)
    if existing is not None and existing.status == ScenarioStatus.PAUSED:
        _ask_about_pause_entrants(scenario, status, name, pause_entrants)
    skip = pause_entrants == "skip"
    _move(scenario, status, actor, name, new=existing is None, skip=skip)
    return "created" if existing is None else "updated"


def _ask_about_pause_entrants(
    scenario: Scenario, status: str, name: str, pause_entrants: str | None
) -> None:
    """Refuse to resume a paused 「セグメントに入った」 scenario that anyone entered the segment
    of while it was stopped, unless the loader chose what happens to them: its next check
    would enroll them all at once, and whoever wrote `status: active` never said whether to.
    The message names the key through its place in the file (load_yaml's prefix)."""
    if status != ScenarioStatus.ACTIVE or pause_entrants is not None:
        return
    paused = entrants_while_paused(scenario, now=timezone.now())
    if paused is None or paused.count == 0:
        return
    raise ScenarioError(
        [
            f"シナリオ「{name}」を再開すると、停止中にセグメント"
            f"「{paused.segment}」に入った{paused.count:,}人が次回のスケジューラ実行で一度に"
            "エントリーします。この人たちにも送るなら --pause-entrants send、送らずにこれ以降に"
            "入った人から対象にするなら --pause-entrants skip を付けて読み込んでください"
        ]
    )
