"""Kizuna settings: one module, every value from the environment.

Defaults give the embedded demo (SQLite under ./var, database task backend); setting
DATABASE_URL=postgres://… moves the operational store to PostgreSQL with the same code.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from kizuna.core.env import env_bool, env_int, env_list, env_str

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(env_str("KIZUNA_DATA_DIR", "var")).resolve()

# KIZUNA_ENV=production switches the HTTPS and cookie settings below to safe defaults and refuses
# to start without an explicit SECRET_KEY and ALLOWED_HOSTS (docs/security.md). The default,
# development, serves the demo over plain HTTP on this machine.
KIZUNA_ENV = env_str("KIZUNA_ENV", "development")
if KIZUNA_ENV not in ("development", "production"):
    raise ImproperlyConfigured(
        f"KIZUNA_ENV は development か production にしてください(いま {KIZUNA_ENV!r})"
    )
PRODUCTION = KIZUNA_ENV == "production"


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept under DATA_DIR.

    The demo must start on a fresh machine without configuration, and sessions must survive a
    restart, so a generated key is stored rather than regenerated on every start.
    """
    key = env_str("SECRET_KEY", "")
    if key:
        return key
    if PRODUCTION:
        # Every web server and worker must sign with the same key; a per-machine file would
        # log staff out whenever a request reaches another machine.
        raise ImproperlyConfigured(
            "KIZUNA_ENV=production では SECRET_KEY が必要です"
            "(50文字以上のランダムな文字列。すべての画面サーバーとワーカーで同じ値)"
        )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured(
        "KIZUNA_ENV=production では DEBUG を有効にできません"
        "(エラーページに設定とお客様のデータが表示されるため)"
    )
if PRODUCTION and "ALLOWED_HOSTS" not in os.environ:
    raise ImproperlyConfigured(
        "KIZUNA_ENV=production では ALLOWED_HOSTS が必要です(例: crm.example.jp)"
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# How many fields one form post may have. Django's 1,000 is fewer than the segment builder
# itself allows: a condition posts one field per ticked choice, so 20 都道府県 conditions with
# all 47 prefectures ticked (~1,020 fields) got Django's bare 400 page and lost the input. The
# builder's own limit is segments.MAX_CONDITIONS (40) conditions: 40 × 47 prefectures = 1,880
# values, plus each condition's node/kind/field/operator, its groups and the name and key —
# about 2,200. 5,000 covers that with room for long tag or product lists and still refuses
# a post of tens of thousands of fields (what Django's limit guards against).
DATA_UPLOAD_MAX_NUMBER_FIELDS = 5_000

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_tasks",
    "django_tasks_db",
    # Login throttling (RELIABILITY D4) and TOTP two-factor authentication.
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "kizuna.core",
    "kizuna.accounts",
    "kizuna.customers",
    "kizuna.commerce",
    "kizuna.subscriptions",
    "kizuna.loyalty",
    "kizuna.support",
    "kizuna.analytics",
    "kizuna.campaigns",
    "kizuna.campaigns.automation",
    "kizuna.web",
    "kizuna.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the TOTP step.
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Inside the CSRF, messages and CommonMiddleware: the page it renders (the header's logout
    # form) gets its CSRF cookie and its Content-Length like any other page.
    "kizuna.web.middleware.ErrorBodyMiddleware",
    # Deny by default: every view must declare who may open it (RELIABILITY D2).
    "kizuna.accounts.middleware.RoleAccessMiddleware",
    # Last, as django-axes asks: turns a lockout into the login page's "locked" message.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "kizuna.urls"
WSGI_APPLICATION = "kizuna.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _databases() -> dict[str, Any]:
    url = env_str("DATABASE_URL", "")
    if url:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60))
        if config["ENGINE"] == "django.db.backends.sqlite3":
            config["OPTIONS"] = _sqlite_options()
        return {"default": config}
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    return {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "kizuna.sqlite3"),
            "OPTIONS": _sqlite_options(),
            # A file (not :memory:) so threads and the live server share it; per process so two
            # test runs on one machine never destroy each other's database.
            "TEST": {"NAME": str(DATA_DIR / f"test-kizuna-{os.getpid()}.sqlite3")},
        }
    }


def _sqlite_options() -> dict[str, Any]:
    # WAL lets the web server read while the worker writes; IMMEDIATE transactions take the
    # write lock up front so two writers queue on busy_timeout instead of failing mid-way.
    # The WAL is written back to the database every 10,000 pages (40 MB) rather than every
    # 1,000: a CSV import commits every 500 orders and checkpointed the same index pages
    # after each batch (100,000 lines: 2.7 s of commits -> 1.7 s). Reads go through a memory
    # map of the first 2 GB of the file (SQLite's own cap) rather than 256 MB: pages read
    # from the map are not copied into SQLite's cache, and a million-customer database is
    # several GB (the outbox fill of 93,000 messages: 6.0-7.0 s -> 5.6-5.8 s). The map is
    # the operating system's page cache, not memory of the process.
    return {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": (
            "PRAGMA journal_mode=WAL;"
            "PRAGMA synchronous=NORMAL;"
            "PRAGMA foreign_keys=ON;"
            "PRAGMA cache_size=-65536;"
            "PRAGMA mmap_size=2147418112;"
            f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT};"
        ),
    }


# Pages (4 KB) of write-ahead log after which a commit copies it back into the database; a
# scenario tick leaves this to a thread instead (core.sqlite_wal).
SQLITE_WAL_AUTOCHECKPOINT = 10_000


DATABASES = _databases()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "web:home"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes, docs/security.md): failures are counted in the database per
# username + IP and per IP; either count reaching its limit locks that login for the cool-off
# time (every further try restarts it). An admin unlocks on セキュリティ管理 or with
# `kizuna axes_reset_username NAME` / `kizuna axes_reset_ip IP`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before any check
    # ModelBackend that reads the 2FA state in the same query as the session's user row.
    "kizuna.accounts.backends.StaffBackend",
]
AXES_FAILURE_LIMIT = env_int("KIZUNA_LOGIN_FAILURE_LIMIT", 5)
# An office's staff often share one public IP: the per-IP limit is higher so a few typos by
# several people do not lock the whole office out, while a password spray is still stopped.
KIZUNA_LOGIN_IP_FAILURE_LIMIT = env_int("KIZUNA_LOGIN_IP_FAILURE_LIMIT", 20)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("KIZUNA_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_HANDLER = "kizuna.accounts.throttling.LoginThrottle"
AXES_CLIENT_IP_CALLABLE = "kizuna.accounts.throttling.client_ip"
AXES_LOCKOUT_CALLABLE = "kizuna.web.security.lockout_response"
AXES_USERNAME_FORM_FIELD = "username"
# Quiet start-up; axes masks usernames and addresses in the lockout lines it logs.
AXES_VERBOSE = False
# Behind a reverse proxy every request comes from the proxy's address: the client's own address
# is then read from X-Forwarded-For, this many entries from its right end.
KIZUNA_TRUSTED_PROXY_COUNT = env_int("KIZUNA_TRUSTED_PROXY_COUNT", 0)
# TOTP (django-otp): the name authenticator apps show; after each wrong code the next try waits
# 1, 2, 4, 8… seconds (kept in the database, so logging in again does not reset it).
OTP_TOTP_ISSUER = env_str("KIZUNA_TOTP_ISSUER", "Kizuna")
OTP_TOTP_THROTTLE_FACTOR = 1

# Japanese only: the screens are written in Japanese, so a browser asking for English must not
# switch Django's own messages (form errors, "This field is required.") and mix the languages.
LANGUAGE_CODE = "ja"
LANGUAGES = [("ja", "日本語")]
TIME_ZONE = "Asia/Tokyo"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# WhiteNoise serves from the installed apps (finders) but warns when its root is missing.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# The demo serves static files from the installed packages without a collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

TASKS = {
    "default": {
        "BACKEND": env_str("KIZUNA_TASK_BACKEND", "django_tasks_db.DatabaseBackend"),
    }
}
# The broker-backed backend for several machines: tasks in Redis, run by `kizuna rqworker`.
if TASKS["default"]["BACKEND"].startswith("django_tasks_rq."):
    INSTALLED_APPS += ["django_rq", "django_tasks_rq"]
    RQ_QUEUES = {"default": {"URL": env_str("KIZUNA_REDIS_URL", "redis://127.0.0.1:6379/0")}}

# Delivery (kizuna.campaigns; docs/automation.md). Mail goes out over real SMTP.
EMAIL_BACKEND = env_str("KIZUNA_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("KIZUNA_SMTP_HOST", "127.0.0.1")
EMAIL_PORT = env_int("KIZUNA_SMTP_PORT", 25)
EMAIL_HOST_USER = env_str("KIZUNA_SMTP_USER", "")
EMAIL_HOST_PASSWORD = env_str("KIZUNA_SMTP_PASSWORD", "")
EMAIL_USE_TLS = env_bool("KIZUNA_SMTP_TLS", False)
EMAIL_USE_SSL = env_bool("KIZUNA_SMTP_SSL", False)
EMAIL_TIMEOUT = env_int("KIZUNA_SMTP_TIMEOUT", 30)
# Where django.core.mail.backends.filebased.EmailBackend writes (the demo uses it when no SMTP
# server is configured, so its mail can be read without one).
EMAIL_FILE_PATH = env_str("KIZUNA_EMAIL_FILE_PATH", str(DATA_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str("KIZUNA_MAIL_FROM", "Kizuna <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
KIZUNA_SENDER_NAME = env_str("KIZUNA_SENDER_NAME", "")
KIZUNA_SENDER_ADDRESS = env_str("KIZUNA_SENDER_ADDRESS", "")
KIZUNA_SENDER_CONTACT = env_str("KIZUNA_SENDER_CONTACT", "")
KIZUNA_PUBLIC_URL = env_str("KIZUNA_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
KIZUNA_UNSUBSCRIBE_MAILTO = env_str("KIZUNA_UNSUBSCRIBE_MAILTO", "")
KIZUNA_LINE_API_BASE = env_str("KIZUNA_LINE_API_BASE", "https://api.line.me").rstrip("/")
KIZUNA_LINE_CHANNEL_TOKEN = env_str("KIZUNA_LINE_CHANNEL_TOKEN", "")
KIZUNA_SMS_API_URL = env_str("KIZUNA_SMS_API_URL", "")
KIZUNA_SMS_API_TOKEN = env_str("KIZUNA_SMS_API_TOKEN", "")
KIZUNA_SMS_SENDER = env_str("KIZUNA_SMS_SENDER", "")
# 500: per-claim work (the claim, consent and cap reads, the sent marks) is shared by more
# messages; a batch still takes well under the lease at any realistic sending rate.
# The most points an operator adjusts at once from the customer page (admins: up to 1,000,000).
KIZUNA_OPERATOR_POINTS_LIMIT = env_int("KIZUNA_OPERATOR_POINTS_LIMIT", 1000)
KIZUNA_OUTBOX_BATCH = env_int("KIZUNA_OUTBOX_BATCH", 500)
KIZUNA_OUTBOX_LEASE_SECONDS = env_int("KIZUNA_OUTBOX_LEASE_SECONDS", 300)
KIZUNA_OUTBOX_MAX_ATTEMPTS = env_int("KIZUNA_OUTBOX_MAX_ATTEMPTS", 8)
KIZUNA_OUTBOX_DURABLE_SENT = env_bool("KIZUNA_OUTBOX_DURABLE_SENT", False)
# Scenario scheduler (docs/automation.md, "Timing"): a gap since the last tick longer than
# this holds what came due for confirmation; so does a message this late; triggers re-read
# this many days of events for data that arrived late.
KIZUNA_SCHEDULER_BACKLOG_MINUTES = env_int("KIZUNA_SCHEDULER_BACKLOG_MINUTES", 60)
KIZUNA_SCHEDULER_MAX_LATE_HOURS = env_int("KIZUNA_SCHEDULER_MAX_LATE_HOURS", 24)
KIZUNA_TRIGGER_LOOKBACK_DAYS = env_int("KIZUNA_TRIGGER_LOOKBACK_DAYS", 7)

# HTTPS hardening: off for the demo on http://127.0.0.1, on by default in production, each
# overridable (`kizuna check --deploy` is clean with the production defaults; docs/security.md).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("KIZUNA_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("KIZUNA_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("KIZUNA_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("KIZUNA_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("KIZUNA_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Preloading is a decision for the owner of the shop's whole domain (the list only takes
    # registrable domains, and Kizuna usually runs on a subdomain such as crm.example.jp).
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
# A TLS-terminating proxy in front: trust its X-Forwarded-Proto, or SSL redirect would loop.
if env_bool("KIZUNA_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Operators page through long histories; these keep every page cheap at 1,000,000 customers.
KIZUNA_PAGE_SIZE = env_int("KIZUNA_PAGE_SIZE", 20)
KIZUNA_SEARCH_LIMIT = env_int("KIZUNA_SEARCH_LIMIT", 50)

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"without_query_string": {"()": "kizuna.core.logs.WithoutQueryString"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("KIZUNA_LOG_LEVEL", "INFO")},
    "loggers": {
        # Request lines carry query strings, and search terms are customer data: the 4xx the
        # development server logs at WARNING are written without them (core/logs.py).
        "django.server": {"level": "WARNING", "filters": ["without_query_string"]},
        "django.request": {"level": "ERROR"},
    },
}
