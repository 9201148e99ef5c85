"""The CSV import page: upload, background run, live progress, the report of bad rows.

Views only validate the form and call kizuna.commerce.importers.runs; the import itself runs
in the worker (`kizuna worker`) through the Django Tasks API.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import PurePath
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.files.uploadedfile import UploadedFile
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRefresh, push_url

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.commerce.importers.decoding import ENCODING_LABELS, ENCODINGS
from kizuna.commerce.importers.errors import UsageError
from kizuna.commerce.importers.generic import parse_mapping
from kizuna.commerce.importers.pipeline import RECORD_KEY_LABELS
from kizuna.commerce.importers.runs import (
    errors_page,
    import_run_create,
    read_progress,
    runs_page,
)
from kizuna.commerce.models import ImportKind, ImportRun
from kizuna.core import yamlfile
from kizuna.core.spreadsheet import csv_lines
from kizuna.web.formtokens import (
    claim_form_token,
    issue_form_token,
    posted_form_token,
    record_form_token,
)
from kizuna.web.http import HtmxHttpRequest, wants_fragment

# Imports write customer data in bulk: marketers and admins (admins are always allowed).
IMPORT_ROLES = (Role.MARKETER,)

DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
MAX_MAPPING_BYTES = 256 * 1024
CSV_EXTENSIONS = (".csv", ".txt")
MAPPING_EXTENSIONS = (".yml", ".yaml")
FORMAT_CHOICES = [
    ("auto", "自動判定(EC-CUBE・Shopify)"),
    ("eccube", "EC-CUBE 4"),
    ("shopify", "Shopify(注文のみ)"),
    ("generic", "汎用CSV(マッピングファイルで列を指定)"),
]
# A run's format and encoding, shown in the words the form offered them in.
FORMAT_LABELS = dict(FORMAT_CHOICES)
# The upload forms this session was given, newest last: token -> None until the form's upload
# has made its run, then {"run": pk, "upload": fingerprint} (see _upload_fingerprint).
FORM_TOKENS_SESSION_KEY = "imports_form_tokens"


def max_upload_bytes() -> int:
    return int(getattr(settings, "KIZUNA_IMPORT_MAX_BYTES", DEFAULT_MAX_UPLOAD_BYTES))


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f}MB"


class ImportForm(forms.Form):
    kind = forms.ChoiceField(
        label="取り込む内容",
        choices=ImportKind.choices,
        initial=ImportKind.ORDERS,
        widget=forms.RadioSelect,
        error_messages={"required": "取り込む内容を選んでください。"},
    )
    file = forms.FileField(
        label="CSVファイル",
        error_messages={
            "required": "CSVファイルを選んでください。",
            "empty": "ファイルが空です。",
            "invalid": "ファイルを受け取れませんでした。もう一度選んでください。",
        },
    )
    file_format = forms.ChoiceField(label="形式", choices=FORMAT_CHOICES, initial="auto")
    encoding = forms.ChoiceField(
        label="文字コード",
        choices=[(name, ENCODING_LABELS[name]) for name in ENCODINGS],
        initial="auto",
    )
    mapping = forms.FileField(
        label="マッピングファイル(YAML・汎用CSVのとき)",
        required=False,
        error_messages={"empty": "マッピングファイルが空です。"},
    )
    consent_wording = forms.CharField(
        label="メール配信同意の文言バージョン",
        initial="import",
        max_length=32,
        help_text=(
            "お客様がメール配信に同意したときに見た案内文(ショップの会員登録・購入画面の"
            "「メルマガを受け取る」の説明など)の版を示す名前です(例: 2024年4月改定版)。"
            "CSVの「メルマガ」「Accepts Marketing」の列から配信同意を記録するとき、"
            "各お客様の同意の記録に残り、顧客の画面の「文言バージョン」に表示されます。"
            "案内文の版を管理していなければ「import」のままでかまいません。"
        ),
        error_messages={
            "required": "文言バージョンを入力してください。",
            "max_length": "32文字以内で入力してください。",
        },
    )
    dry_run = forms.BooleanField(
        label="試行する(書き込まずに、取り込んだ場合の結果だけを確認します)",
        required=False,
        initial=True,
    )
    strict = forms.BooleanField(
        label="1行でも誤りがあれば何も取り込まない",
        required=False,
    )

    def clean_file(self) -> UploadedFile:
        upload: UploadedFile = self.cleaned_data["file"]
        name = upload.name or ""
        if PurePath(name).suffix.lower() not in CSV_EXTENSIONS:
            raise forms.ValidationError("拡張子が .csv または .txt のファイルを選んでください。")
        limit = max_upload_bytes()
        if (upload.size or 0) > limit:
            raise forms.ValidationError(
                f"ファイルが大きすぎます({_megabytes(upload.size or 0)})。"
                f"{_megabytes(limit)}までのファイルにするか、分けて取り込んでください。"
            )
        return upload

    def clean_mapping(self) -> str:
        upload: UploadedFile | None = self.cleaned_data.get("mapping")
        if upload is None:
            return ""
        if PurePath(upload.name or "").suffix.lower() not in MAPPING_EXTENSIONS:
            raise forms.ValidationError("マッピングファイルは .yml または .yaml です。")
        if (upload.size or 0) > MAX_MAPPING_BYTES:
            raise forms.ValidationError("マッピングファイルが大きすぎます。")
        try:
            text: str = upload.read().decode("utf-8-sig")
            return text
        except UnicodeDecodeError:
            raise forms.ValidationError("マッピングファイルは UTF-8 で保存してください。") from None

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        assert cleaned is not None  # noqa: S101 - Form.clean returns the cleaned data
        kind = cleaned.get("kind")
        file_format = cleaned.get("file_format")
        mapping = cleaned.get("mapping", "")
        if file_format == "generic" and not mapping and "mapping" not in self.errors:
            self.add_error("mapping", "汎用CSVにはマッピングファイルが必要です。")
        if mapping and file_format not in ("generic", "auto"):
            self.add_error("mapping", "マッピングファイルは形式「汎用CSV」のときに使います。")
        if kind == ImportKind.CUSTOMERS and file_format == "shopify":
            self.add_error("file_format", "Shopify は注文CSVのみ取り込めます。")
        if mapping and kind:
            try:
                # The loader the import itself uses: a key written twice is refused here too.
                parse_mapping(yamlfile.load(mapping), kind=str(kind))
            except yamlfile.YamlError as exc:
                self.add_error("mapping", f"マッピングファイルの書き方が正しくありません({exc})。")
            except UsageError as exc:
                self.add_error("mapping", exc.message)
        return cleaned


def _upload_fingerprint(data: dict[str, Any]) -> str:
    """What a resubmission of the same form sends again: the file's bytes and every choice.

    Going back to a form already sent brings its token back too; a different file or choice
    sent with it is a new import the operator meant, not a second click.
    """
    upload: UploadedFile = data["file"]
    digest = hashlib.sha256()
    choices = {name: value for name, value in data.items() if name != "file"}
    digest.update(json.dumps([upload.name, choices], sort_keys=True).encode())
    for chunk in upload.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def _page_context(request: HtmxHttpRequest, form: ImportForm) -> dict[str, Any]:
    return {
        "form": form,
        # One rendering of the form: its upload makes one run, however often sent.
        "form_token": issue_form_token(request, FORM_TOKENS_SESSION_KEY),
        "runs": runs_page(request.GET.get("page")),
        "max_upload": _megabytes(max_upload_bytes()),
    }


@allow_roles(*IMPORT_ROLES)
@require_http_methods(["GET", "POST"])
def import_index(request: HtmxHttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
        token = posted_form_token(request, FORM_TOKENS_SESSION_KEY)
        if token is None:
            form.add_error(
                None,
                "この画面を開いてから時間が経ったため、受け付けませんでした。"
                "お手数ですが、もう一度ファイルを選んで取り込みを始めてください。",
            )
        if token is not None and form.is_valid():
            data = form.cleaned_data
            upload: UploadedFile = data["file"]
            fingerprint = _upload_fingerprint(data)
            first, earlier = claim_form_token(token, variant=fingerprint)
            if not first:
                messages.info(
                    request,
                    "このファイルはすでに受け付けています。二重に取り込まないよう、"
                    "2回目の送信では取り込みを始めませんでした(同じファイルをもう一度"
                    "取り込むときは、CSV取り込みの画面を開き直してください)。",
                )
                # The first send may still be storing the file: its run is not known yet.
                if earlier is None:
                    return redirect("imports:index")
                return redirect("imports:detail", pk=earlier["run"])
            run = import_run_create(
                kind=data["kind"],
                chunks=upload.chunks(),
                original_name=PurePath(upload.name or "upload.csv").name,
                file_format=data["file_format"],
                encoding=data["encoding"],
                dry_run=data["dry_run"],
                strict=data["strict"],
                consent_wording=data["consent_wording"],
                mapping_yaml=data["mapping"],
                acting_user=request.user,
            )
            record_form_token(token, {"run": run.pk}, variant=fingerprint)
            return redirect("imports:detail", pk=run.pk)
        return render(request, "web/imports/index.html", _page_context(request, form), status=400)
    form = ImportForm(initial=_choices_of_dry_run(request.GET.get("after")))
    return render(request, "web/imports/index.html", _page_context(request, form))


def _choices_of_dry_run(run_id: str | None) -> dict[str, Any]:
    """The form's choices as a finished dry run made them, with 試行 unticked: the upload
    itself is deleted when a run ends (it holds customers' personal data), so after a dry run
    only the file has to be chosen again."""
    if not (run_id or "").isdigit():
        return {}
    run = ImportRun.objects.filter(pk=int(run_id or 0), dry_run=True).first()
    if run is None:
        return {}
    return {
        "kind": run.kind,
        "file_format": run.file_format,
        "encoding": run.encoding,
        "consent_wording": run.consent_wording,
        "strict": run.strict,
        "dry_run": False,
    }


def _run_or_404(pk: int) -> ImportRun:
    run = ImportRun.objects.select_related("created_by").filter(pk=pk).first()
    if run is None:
        raise Http404("取り込みが見つかりません")
    return run


def _mode_label(run: ImportRun) -> str:
    """方式 in the words of the form's check boxes, both of them when both were ticked."""
    strict = str(ImportForm.base_fields["strict"].label)
    if run.dry_run:
        return "試行(何も書き込みません)" + (f"・{strict}" if run.strict else "")
    return strict if run.strict else "正しい行だけ取り込む"


def _progress_context(run: ImportRun) -> dict[str, Any]:
    progress = read_progress(run) if not run.finished else None
    percent = None
    if progress:
        if progress["phase"] == "import" and progress["total_rows"]:
            percent = min(100, round(100 * progress["rows"] / progress["total_rows"]))
        elif progress["total_bytes"]:
            percent = min(100, round(100 * progress["bytes_read"] / progress["total_bytes"]))
    # What the import found once it has read the file; until then, what was chosen (自動判定).
    file_format = run.summary.get("format") or run.file_format
    encoding = run.summary.get("encoding") or run.encoding
    return {
        "run": run,
        "progress": progress,
        "percent": percent,
        "format_label": FORMAT_LABELS.get(file_format, file_format),
        "encoding_label": ENCODING_LABELS.get(encoding, encoding),
        "mode_label": _mode_label(run),
        "skipped": _skipped_by_reason(run.summary),
    }


def _skipped_by_reason(summary: dict[str, Any]) -> list[tuple[str, int, list[str]]]:
    """対象外 as the result lists it: each reason, its count and the order numbers kept for it
    (the importer keeps the first ones only)."""
    orders: dict[str, list[str]] = {}
    for skipped in summary.get("skipped_orders", []):
        orders.setdefault(skipped["reason"], []).append(skipped["order"])
    return [
        (reason, count, orders.get(reason, [])) for reason, count in summary.get("skip_reasons", [])
    ]


def _errors_context(run: ImportRun, page: str | None) -> dict[str, Any]:
    """A page of the run's rejected rows, and what their key column is called: a member file's
    rows are named by member ID, not by an order number they do not have."""
    return {
        "run": run,
        "errors": errors_page(run, page),
        "key_label": RECORD_KEY_LABELS[run.kind],
    }


@allow_roles(*IMPORT_ROLES)
@require_GET
def import_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = _run_or_404(pk)
    context = {**_progress_context(run), **_errors_context(run, request.GET.get("page"))}
    return render(request, "web/imports/detail.html", context)


@allow_roles(*IMPORT_ROLES)
@require_GET
def import_status(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Polled by the status page while the import runs; reloads the page when it ends."""
    run = _run_or_404(pk)
    if run.finished and wants_fragment(request):
        return HttpResponseClientRefresh()
    response = render(request, "web/imports/_status.html", _progress_context(run))
    patch_vary_headers(response, ("HX-Request",))
    return response


@allow_roles(*IMPORT_ROLES)
@require_GET
def import_errors(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    run = _run_or_404(pk)
    context = _errors_context(run, request.GET.get("page"))
    errors = context["errors"]
    if wants_fragment(request):
        response = render(request, "web/imports/_errors.html", context)
        # The page shown goes into the address bar as the detail page's own ?page=, which
        # that page honours: a reload or a shared link opens the same rows.
        detail_url = reverse("imports:detail", args=[run.pk])
        page_url = f"{detail_url}?page={errors.number}" if errors.number > 1 else detail_url
        push_url(response, page_url)
    else:
        context.update(_progress_context(run))
        response = render(request, "web/imports/detail.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@allow_roles(*IMPORT_ROLES)
@never_cache
@require_GET
def import_errors_csv(request: HtmxHttpRequest, pk: int) -> StreamingHttpResponse:
    """Every rejected row as CSV, for a report too long to page through (12,000 rows are
    240 pages). The run keeps only line, column, reason and key, so that is what the file has:
    the upload itself is deleted once the run ends."""
    run = _run_or_404(pk)
    header = ["行", "列", "理由", RECORD_KEY_LABELS[run.kind]]
    rows = (
        [str(error.line), error.column, error.reason, error.order_key]
        for error in run.row_errors.order_by("line", "id").iterator(chunk_size=2000)
    )
    response = StreamingHttpResponse(
        csv_lines(itertools.chain([header], rows)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="import-{run.pk}-errors.csv"'
    return response
