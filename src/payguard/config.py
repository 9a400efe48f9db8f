"""Settings, read once from the environment (``PAYGUARD_*``) and passed down explicitly."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from payguard.private_files import write_private

__all__ = ["SIMULATED_API_KEY", "SIMULATED_WEBHOOK_SECRET", "Settings", "load_settings"]

SIMULATED_API_KEY = "sk_test_payguard_simulated"
SIMULATED_WEBHOOK_SECRET = "whsec_payguard_simulated"

#: The PhonePe simulator's credentials: fine for local runs, refused for real PhonePe.
SIM_PHONEPE_CLIENT_ID = "PAYGUARD_SIM_CLIENT"
SIM_PHONEPE_CLIENT_SECRET = "payguard-sim-client-secret"
SIM_PHONEPE_CALLBACK_USERNAME = "payguard-sim"
SIM_PHONEPE_CALLBACK_PASSWORD = "payguard-sim-callback-password"


class Settings(BaseSettings):
    """Every knob of payguard. Field ``foo`` is read from ``PAYGUARD_FOO``."""

    model_config = SettingsConfigDict(env_prefix="PAYGUARD_", extra="ignore")

    data_dir: Path = Path(".payguard")
    database_url: str | None = None
    # Connections per process (plus as many again on demand). PostgreSQL allows 100 by
    # default: instances x workers x 2 x db_pool_size must stay below that.
    db_pool_size: int = Field(default=10, ge=1)
    # Seconds to wait for a connection to a PostgreSQL host before trying the next one of
    # a multi-host URL (and, with none left, answering 503).
    db_connect_timeout: float = Field(default=5.0, gt=0)
    # Seconds a transaction that found no writable server (a failover) is retried inside
    # the request before it is answered 503 DATABASE_UNAVAILABLE with Retry-After.
    db_unavailable_wait: float = Field(default=2.0, ge=0)
    # Per-session synchronous_commit. "on" with synchronous_standby_names on the server
    # waits for the standby to flush; "remote_apply" also for it to apply. "local" and
    # "off" can lose acknowledged payments in a failover (docs/failover.md): they exist so
    # that the failover harness can show that it catches exactly that.
    db_synchronous_commit: Literal["on", "remote_apply", "remote_write", "local", "off"] = "on"
    redis_url: str | None = None
    lock_redis_prefix: str = "payguard:locks:"
    lock_backend: Literal["auto", "local", "sql", "redis"] = "auto"
    admin_token: str | None = None
    # Seconds a resolved user token is trusted from the in-process cache: after a token
    # rotation, other instances may accept the old token for at most this long (0: off).
    token_cache_ttl: float = Field(default=5.0, ge=0, le=300)
    token_cache_size: int = Field(default=10_000, ge=0)

    # Webhook inbox applier: seconds between sweeps for pending events (failed applies
    # after their backoff, events of a process that died), applies running at once per
    # process, seconds the receiving process holds a new event before others may take it.
    inbox_interval: float = Field(default=1.0, gt=0)
    inbox_concurrency: int = Field(default=8, ge=1)
    inbox_lease: float = Field(default=30.0, gt=0)

    currency: str = "USD"
    max_amount: int = Field(default=100_000_000, gt=0)
    receipt_format: str = "SC{year}{seq:06d}"
    order_format: str = "ORD{year}{seq:06d}"

    # Request bodies are refused with 413 past these sizes, while they stream in and before
    # they are parsed or the caller authenticated. Webhooks are small (Stripe's are a few KB).
    # Swagger UI at /api/docs (from local pinned assets). Unset: on with the simulated
    # provider (development), off with a real one.
    api_docs: bool | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    webhook_max_body_bytes: int = Field(default=65_536, ge=1024)

    # Per-user limits (429 LIMIT_REACHED): card checkouts pending at once, stock items held
    # by them, pending top-ups, and new idempotency keys per hour (the admin is exempt).
    max_pending_checkouts: int = Field(default=10, ge=1)
    max_held_items: int = Field(default=20, ge=1)
    max_pending_topups: int = Field(default=3, ge=1)
    max_keys_per_hour: int = Field(default=10_000, ge=1)

    idempotency_ttl: int = Field(default=86_400, gt=0)
    idempotency_lock_timeout: float = Field(default=60.0, gt=0)
    # Seconds a process may go without renewing its heartbeat before what it holds (claims,
    # checkout locks) is taken over as a dead holder's. It beats four times per lease.
    holder_lease: float = Field(default=4.0, gt=0)

    # Group commit of wallet purchases and adjustments (service.batch_writer): at most
    # batch_max commands per transaction; batch_queue commands may wait per process before
    # new ones are answered 503 OVERLOADED; batch_linger_ms waits for more commands after
    # the first of a batch (0: none; the previous commit's duration already gathers them).
    batch_max: int = Field(default=256, ge=1, le=4096)
    batch_queue: int = Field(default=4096, ge=1)
    batch_linger_ms: float = Field(default=0.0, ge=0, le=1000)

    provider: Literal["simulated", "stripe", "phonepe"] = "simulated"
    # Which simulator ``provider=simulated`` runs and talks to.
    simulated_provider: Literal["stripe", "phonepe"] = "stripe"
    # Development defaults for the simulator only: PAYGUARD_PROVIDER=stripe refuses them.
    stripe_api_key: str = SIMULATED_API_KEY
    stripe_webhook_secret: str = SIMULATED_WEBHOOK_SECRET
    stripe_api_base: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    # PhonePe Standard Checkout v2 (PAYGUARD_PROVIDER=phonepe, or the PhonePe simulator).
    # The defaults are the simulator's; PAYGUARD_PROVIDER=phonepe refuses to start with them.
    phonepe_client_id: str = SIM_PHONEPE_CLIENT_ID
    phonepe_client_secret: str = SIM_PHONEPE_CLIENT_SECRET
    phonepe_client_version: int = Field(default=1, ge=1)
    phonepe_env: Literal["sandbox", "production"] = "sandbox"
    phonepe_api_base: str | None = None  # unset: the SDK's host for phonepe_env
    phonepe_oauth_base: str | None = None  # unset: phonepe_api_base
    phonepe_callback_username: str = SIM_PHONEPE_CALLBACK_USERNAME
    phonepe_callback_password: str = SIM_PHONEPE_CALLBACK_PASSWORD
    # Status polling of pending PhonePe orders, on PhonePe's schedule (first check ~20 s
    # after the order, then every 3 s backing off to every 60 s). ``poll_scale`` multiplies
    # every delay of that schedule (tests use a small one); ``poll_interval`` is how often
    # ``serve`` looks for orders due for a check.
    phonepe_poll_first: float = Field(default=20.0, ge=0)
    phonepe_poll_scale: float = Field(default=1.0, gt=0)
    phonepe_poll_interval: float = Field(default=1.0, ge=0)
    provider_concurrency: int = Field(default=100, gt=0)
    provider_queue: int = Field(default=1000, ge=0)
    provider_timeout: float = Field(default=10.0, gt=0)
    checkout_lock_wait: float = Field(default=2.0, ge=0)
    # Stripe refuses checkout sessions that expire in under 30 minutes; 31 leaves room for
    # the time between computing expires_at and Stripe receiving it.
    checkout_expires_after: int = Field(default=1860, ge=60)

    smtp_url: str | None = None
    mail_from: str = "payguard@localhost"
    outbox_max_attempts: int = Field(default=10, ge=1)
    outbox_interval: float = Field(default=1.0, gt=0)

    stuck_after: int = Field(default=3600, ge=0)
    reconcile_interval: float = Field(default=60.0, ge=0)

    sim_failure_rate: float = Field(default=0.0, ge=0, le=1)
    sim_latency_ms: int = Field(default=0, ge=0)
    sim_duplicate_deliveries: int = Field(default=1, ge=1)
    sim_drop_webhooks: bool = False
    sim_webhook_url: str | None = None
    sim_webhook_attempts: int = Field(default=8, ge=1)
    sim_webhook_backoff: float = Field(default=0.5, gt=0)
    # PhonePe simulator only: callbacks held back this long before they are sent (0: none),
    # and where they go (default {PUBLIC_URL}/api/webhooks/phonepe).
    sim_callback_delay_ms: int = Field(default=0, ge=0)
    sim_phonepe_callback_url: str | None = None

    # Seconds a request may be held inside the purchase handler; a test hook that lets the
    # crash-safety tests SIGKILL the server while requests are in flight. Never set in production.
    test_hold_seconds: float = Field(default=0.0, ge=0)
    # Seconds a checkout waits, holding its lock, between reserving and calling the
    # provider: lets the fencing test freeze a holder mid-checkout. Never set in production.
    test_checkout_hold_seconds: float = Field(default=0.0, ge=0)
    workers: int = Field(default=1, ge=1)
    log_requests: bool = True

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, v: str) -> str:
        if len(v) != 3 or not v.isalpha():
            raise ValueError("currency must be a 3-letter ISO 4217 code")
        return v.upper()

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: SQLite in the data dir unless a URL is configured."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'payguard.db').resolve()}"
        return to_async_url(url)

    @property
    def payment_provider(self) -> Literal["stripe", "phonepe"]:
        """Which provider's API payguard talks to (real or simulated)."""
        if self.provider == "simulated":
            return self.simulated_provider
        return self.provider

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def ensure_admin_token(self) -> str:
        """The admin token: configured, or generated once and kept in the data dir."""
        if self.admin_token:
            return self.admin_token
        path = self.data_dir / "admin_token"
        if path.exists():
            self.admin_token = path.read_text().strip()
        else:
            self.admin_token = "pgadm_" + secrets.token_urlsafe(24)
            write_private(path, self.admin_token + "\n")
        return self.admin_token

    def production_problems(self) -> list[str]:
        """Why this configuration must not serve real payments (empty: it may).

        With the real provider, the built-in simulator key and webhook secret (public, in
        this source) would let anyone sign webhooks; they must be set explicitly. Likewise
        PhonePe's client credentials and callback username/password.
        """
        if self.provider == "phonepe":
            return self._phonepe_problems()
        if self.provider != "stripe":
            return []
        problems = []
        if self.stripe_api_key == SIMULATED_API_KEY:
            problems.append("PAYGUARD_STRIPE_API_KEY is not set (the built-in simulator key "
                            "is public)")
        if self.stripe_webhook_secret == SIMULATED_WEBHOOK_SECRET:
            problems.append("PAYGUARD_STRIPE_WEBHOOK_SECRET is not set (the built-in "
                            "simulator secret is public: anyone could sign webhooks)")
        return problems

    def _phonepe_problems(self) -> list[str]:
        checks = (
            ("PAYGUARD_PHONEPE_CLIENT_ID", self.phonepe_client_id, SIM_PHONEPE_CLIENT_ID),
            ("PAYGUARD_PHONEPE_CLIENT_SECRET", self.phonepe_client_secret,
             SIM_PHONEPE_CLIENT_SECRET),
            # Anyone who knows these can make callbacks pass the Authorization check.
            ("PAYGUARD_PHONEPE_CALLBACK_USERNAME", self.phonepe_callback_username,
             SIM_PHONEPE_CALLBACK_USERNAME),
            ("PAYGUARD_PHONEPE_CALLBACK_PASSWORD", self.phonepe_callback_password,
             SIM_PHONEPE_CALLBACK_PASSWORD),
        )
        return [p for p in (_phonepe_problem(*c) for c in checks) if p is not None]


def _phonepe_problem(name: str, value: str, simulated: str) -> str | None:
    if not value.strip():
        return f"{name} is not set"
    if value == simulated:
        return f"{name} is the built-in simulator value (public, in this source)"
    return None


def to_async_url(url: str) -> str:
    """Map plain ``postgresql://`` / ``sqlite://`` URLs onto the async drivers.

    A libpq-style multi-host URL, ``postgresql://user@h1:5432,h2:5432/db?...``, becomes
    SQLAlchemy's form, ``postgresql+asyncpg://user@/db?host=h1:5432&host=h2:5432&...``
    (asyncpg then tries the hosts in order; ``target_session_attrs=read-write`` makes it
    skip standbys).
    """
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + _multi_host_to_query(url.split("://", 1)[1])
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


def _multi_host_to_query(rest: str) -> str:
    """``user@h1:p1,h2:p2/db?q`` -> ``user@/db?host=h1:p1&host=h2:p2&q``; else unchanged."""
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return rest
    database, _sep, query = path.partition("?")
    params = [f"host={h if ':' in h else h + ':5432'}" for h in hosts.split(",") if h]
    if query:
        params.append(query)
    return f"{userinfo}{at}/{database}?{'&'.join(params)}"


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
