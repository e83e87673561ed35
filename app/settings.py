"""One typed settings object, read from ``USER_SERVICE_*`` environment variables.

Nested groups use a double underscore: ``USER_SERVICE_DB__URL``,
``USER_SERVICE_PASSWORDS__MEMORY_COST_KIB``. Every variable is listed in ``.env.example``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///.data/user-service.sqlite3"
DEV_SIGNING_KEY_PATH = Path(".data/dev-signing-key.pem")
DEV_MFA_KEY_PATH = Path(".data/dev-mfa-key")


def _cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU limit of this container in CPUs, from cgroup v2 (cpu.max) or, on older nodes,
    cgroup v1 (cpu.cfs_quota_us / cpu.cfs_period_us); None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: the cgroup quota (a Kubernetes CPU limit) and the
    affinity mask, not the node's core count."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if (quota := _cgroup_cpu_quota(cgroup_root)) is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class DatabaseSslMode(StrEnum):
    """libpq's sslmode values that mean something to asyncpg (allow is prefer's mirror image)."""

    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"

    @property
    def verifies(self) -> bool:
        return self in (DatabaseSslMode.VERIFY_CA, DatabaseSslMode.VERIFY_FULL)


class DatabaseSettings(BaseModel):
    url: str = Field(
        default=EMBEDDED_DATABASE_URL,
        description="SQLAlchemy URL; postgresql+asyncpg://user:pass@host:5432/db in production.",
    )
    # Persistent connections. Overflow connections are opened for one checkout and closed
    # right after, which under steady load means a connect (and TLS attempt) per request,
    # so the default is a pool large enough for the load and no overflow.
    pool_size: int = Field(default=20, ge=1)
    max_overflow: int = Field(default=0, ge=0)
    pool_timeout_seconds: int = Field(default=5, ge=1)
    # A round trip on every checkout. Off by default: a connection that died (database
    # restart) fails one request with 503 and SQLAlchemy then renews the whole pool.
    pool_pre_ping: bool = False
    # How long one SQL statement may run before PostgreSQL cancels it; keeps a stuck
    # query from holding a pooled connection (and a client) forever.
    statement_timeout_ms: int = Field(default=10_000, ge=0)
    transaction_pooler: bool = Field(
        default=False,
        description=(
            "Connected through a pooler in transaction mode (PgBouncer, CloudNativePG's Pooler): no "
            "statement cache, uniquely named prepared statements, and no statement_timeout startup "
            "parameter, which PgBouncer refuses. Set the timeout on the database role instead."
        ),
    )
    ssl_mode: DatabaseSslMode | None = Field(
        default=None,
        description=(
            "TLS to PostgreSQL, as libpq's sslmode: verify-full checks the server's certificate against "
            "ssl_root_cert and its name against the URL's host. Unset: asyncpg's default (PGSSLMODE, else "
            "prefer: encrypted when the server offers it, unverified)."
        ),
    )
    ssl_root_cert: Path | None = Field(
        default=None,
        description=(
            "The CA certificates (PEM) verify-ca and verify-full trust, e.g. CloudNativePG's <cluster>-ca "
            "secret's ca.crt. Unset: the system's trust store."
        ),
    )
    migrate_on_start: bool | None = Field(
        default=None,
        description="Run Alembic migrations at start-up. Default: only for the embedded SQLite database.",
    )
    echo: bool = False

    @model_validator(mode="after")
    def _root_cert_only_where_verified(self) -> DatabaseSettings:
        # A CA file that nothing reads would look like verification while there is none.
        if self.ssl_root_cert is not None and (self.ssl_mode is None or not self.ssl_mode.verifies):
            raise ValueError(
                "USER_SERVICE_DB__SSL_ROOT_CERT is only read with USER_SERVICE_DB__SSL_MODE=verify-ca or verify-full"
            )
        return self

    @property
    def is_embedded(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def should_migrate_on_start(self) -> bool:
        return self.is_embedded if self.migrate_on_start is None else self.migrate_on_start


# OWASP's argon2id configurations (Password Storage Cheat Sheet), as (memory KiB, time
# cost) with parallelism 1: equal in defence, trading memory for passes. Production refuses
# parameters that meet none of them.
OWASP_ARGON2ID_MINIMUMS = ((47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5))


class PasswordSettings(BaseModel):
    # argon2id defaults: twice the time cost of OWASP's first option (m=46 MiB, t=1, p=1);
    # measured at 57 ms per verify on a 2-core runner (README, "Password hashing").
    time_cost: int = Field(default=2, ge=1)
    memory_cost_kib: int = Field(default=47_104, ge=8)
    parallelism: int = Field(default=1, ge=1)
    hash_length: int = Field(default=32, ge=16)
    salt_length: int = Field(default=16, ge=16)
    pool_size: int = Field(default_factory=available_cpus, ge=1)
    queue_size: int = Field(default=32, ge=0, description="Hashes waiting for a worker before 503.")
    retry_after_seconds: int = Field(default=1, ge=1)
    # How long a login or registration shed at the edge waits before its 503 (an idle
    # wait: no CPU). A client retrying at once, without honouring Retry-After, then sends
    # one request per connection per this long, and its sheds cannot take the cores from
    # the hashing that still gets through (app/web/shedding.py). At most Retry-After.
    shed_delay_seconds: float = Field(default=0.5, ge=0)
    # How much the hashing threads' nice value is raised above the process's (Linux, per
    # thread; 0 leaves them as they are). The
    # event loop then wins the CPU whenever it has work: a probe, a read or a login's own
    # bookkeeping waits for no hash, and the hashes take every cycle it leaves.
    thread_nice: int = Field(default=10, ge=0, le=19)
    min_length: int = Field(default=8, ge=1)
    max_length: int = Field(default=256, ge=8)
    pwned_check_enabled: bool = False
    pwned_api_url: HttpUrl = HttpUrl("https://api.pwnedpasswords.com/range/")
    pwned_timeout_seconds: float = Field(default=2.0, gt=0)
    # glibc: serve argon2's memory from the heap and keep it mapped (app/identity/memory.py).
    keep_memory_mapped: bool = True

    @model_validator(mode="after")
    def _shed_delay_within_retry_after(self) -> PasswordSettings:
        if self.shed_delay_seconds > self.retry_after_seconds:
            raise ValueError("shed_delay_seconds must not exceed retry_after_seconds")
        return self

    @property
    def meets_owasp_minimum(self) -> bool:
        return any(
            self.memory_cost_kib >= memory and self.time_cost >= passes for memory, passes in OWASP_ARGON2ID_MINIMUMS
        )


class TokenSettings(BaseModel):
    issuer: str = "user-service"
    audience: str = "user-service"
    access_ttl_seconds: int = Field(default=900, ge=30)
    refresh_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    # However often it is refreshed, a session ends this long after its login: then the
    # user signs in again (a stolen refresh token cannot keep a session alive for ever).
    session_max_age_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    leeway_seconds: int = Field(default=10, ge=0)
    # Lifetimes of the single-use tokens that links in mails carry. A reset link is a
    # password in a mailbox: short. Verification and email change wait for a person to
    # get round to their mail.
    verify_email_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    # One hour: as long as the per-address mail limit's window, so that whoever floods an
    # address with reset requests cannot leave its owner without a live link while the
    # limit refuses new ones (the flood's own mails carry links the owner can use).
    password_reset_ttl_seconds: int = Field(default=3600, ge=60)
    email_change_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    # A login from a client address and user agent pair not seen for this account within
    # this many days mails its owner a notice (MAIL__NEW_LOGIN_NOTICE).
    known_client_days: int = Field(default=180, ge=1)
    # Verified access tokens kept per process (0 turns the cache off); see TokenIssuer.
    # The same bound applies to the callers remembered (app/accounts/callers.py).
    verified_cache_size: int = Field(default=10_000, ge=0)
    # How long an authenticated caller (account and session) is remembered per process:
    # a logout, deactivation, deletion or role change made on another replica is seen
    # there at most this long after (on this replica at once). 0: read on every request.
    caller_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    signing_key: SecretStr | None = Field(default=None, description="PEM of the Ed25519 key that signs.")
    signing_key_file: Path | None = None
    # Keys that no longer sign but whose tokens must still verify during a rotation.
    verification_key_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    @field_validator("verification_key_files", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()) for part in value.split(",") if part.strip()]
        return value

    @property
    def has_signing_key(self) -> bool:
        return self.signing_key is not None or self.signing_key_file is not None


def _comma_separated(value: object) -> object:
    """``a, b`` from the environment as a list; a JSON list still works from code."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class MfaSettings(BaseModel):
    """The second factor (TOTP, RFC 6238; app/identity/totp.py).

    The TOTP secrets are encrypted at rest (AES-256-GCM) with a key of their own, not one
    derived from the signing key: signing keys rotate, and every enrolment would die with
    the old one. A key is 32 random bytes in base64 (``openssl rand -base64 32``)."""

    # The account name's prefix in the authenticator app ("User Service: alice").
    issuer: str = Field(default="User Service", min_length=1, max_length=64)
    encryption_key: SecretStr | None = Field(default=None, description="base64 of 32 random bytes")
    encryption_key_file: Path | None = None
    # Keys that no longer encrypt but whose ciphertexts must still decrypt during a
    # rotation; a secret is re-encrypted with the current key at its next successful use.
    previous_encryption_key_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # How long the ``mfa_token`` of a login whose password was right may be redeemed.
    challenge_ttl_seconds: int = Field(default=300, ge=30, le=3600)

    @field_validator("previous_encryption_key_files", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()) for part in value.split(",") if part.strip()]
        return value

    @property
    def has_encryption_key(self) -> bool:
        return self.encryption_key is not None or self.encryption_key_file is not None


class HttpSettings(BaseModel):
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Sum of header names and values; a bearer token and ordinary headers are ~2 KiB.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # Litestar's debug mode puts tracebacks in error bodies; never in production.
    debug: bool = False
    # After SIGTERM: seconds of answering "not ready" while still serving, before the
    # server stops accepting (see app/system/shutdown.py).
    drain_seconds: float = Field(default=5.0, ge=0)
    # Peers (IPs or CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed: the
    # ingress controller or nginx. Empty: the TCP peer is the client, whatever the headers
    # say, so no client can pick the address its rate limit is counted under.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Strict-Transport-Security max-age, sent only on requests that arrived over HTTPS
    # (directly, or per a trusted proxy's X-Forwarded-Proto). 0 turns the header off.
    hsts_seconds: int = Field(default=31_536_000, ge=0)
    # Browser origins allowed to call the API. Empty: no CORS headers at all.
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False

    _split_lists = field_validator("trusted_proxies", "cors_allow_origins", mode="before")(_comma_separated)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry)  # ValueError names the bad entry (host bits set in a CIDR, too)
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> HttpSettings:
        if self.cors_allow_credentials and "*" in self.cors_allow_origins:
            raise ValueError(
                "USER_SERVICE_HTTP__CORS_ALLOW_ORIGINS: '*' cannot be combined with "
                "USER_SERVICE_HTTP__CORS_ALLOW_CREDENTIALS=true; list the origins"
            )
        return self


RATE_PATTERN = r"^\s*[1-9][0-9]*\s*/\s*(second|minute|hour|day)\s*$"


def parse_rate(rate: str) -> tuple[Literal["second", "minute", "hour", "day"], int]:
    """``"60/minute"`` as Litestar's ``("minute", 60)``."""
    count, unit = (part.strip() for part in rate.split("/"))
    if unit not in ("second", "minute", "hour", "day"):
        raise ValueError(f"unknown rate unit in {rate!r}")
    return unit, int(count)  # type: ignore[return-value]  # checked just above


class RateLimitSettings(BaseModel):
    """Requests per client address ("N/second|minute|hour|day") on the unauthenticated
    auth endpoints. Counted in this process's memory, or in Redis when
    ``USER_SERVICE_REDIS_URL`` is set, so that every replica shares the count."""

    enabled: bool = True
    # A person logs in a few times a day; 30 a minute leaves room for a shared NAT address
    # while making a single-address password spray pointless (the account throttle
    # handles spreads over many addresses).
    login: str = Field(default="30/minute", pattern=RATE_PATTERN)
    registration: str = Field(default="10/minute", pattern=RATE_PATTERN)
    # Clients refresh every access-token lifetime (15 min); 120/min leaves a NAT of
    # many clients room.
    refresh: str = Field(default="120/minute", pattern=RATE_PATTERN)
    # Per signed-in account, on every endpoint that checks its current password (a password
    # change): a person needs a few tries a day; a stolen token gets no fast oracle.
    password_check: str = Field(default="10/hour", pattern=RATE_PATTERN)
    # Per client address, on every endpoint that sends mail (verification, password reset,
    # email change): each costs a mail someone receives.
    mail_request: str = Field(default="10/minute", pattern=RATE_PATTERN)
    # Per target address, whoever asks and from wherever: nobody can flood a mailbox with
    # our mail by spreading requests over many client addresses.
    mail_per_address: str = Field(default="5/hour", pattern=RATE_PATTERN)
    # Per client address, on every confirmation of a mailed link (API and account pages):
    # one live reset link must not buy unlimited password hashes.
    link_confirm: str = Field(default="30/minute", pattern=RATE_PATTERN)


class LoginThrottleSettings(BaseModel):
    """Per-account back-off after failed logins: ``free_attempts`` failures cost nothing,
    then each failure blocks the account name for ``base_delay_seconds`` doubled per
    further failure, never more than ``max_delay_seconds``. Failures older than
    ``forget_after_seconds`` are forgotten. Kept in PostgreSQL (or Redis when
    ``USER_SERVICE_REDIS_URL`` is set), so every replica sees it."""

    enabled: bool = True
    free_attempts: int = Field(default=5, ge=1)
    base_delay_seconds: int = Field(default=1, ge=1)
    # The cap bounds what an attacker can do to the real user: at worst one attempt per
    # five minutes, never a lockout.
    max_delay_seconds: int = Field(default=300, ge=1)
    forget_after_seconds: int = Field(default=3600, ge=1)
    # Beyond the free attempts one check runs at a time per name; the others wait, in
    # line, this long for a turn before they are answered 429 (a user's own concurrent
    # logins wait a verify or two; an attacker's burst learns of the block the first check
    # started). Generous: under a full hashing queue one verify can take seconds.
    wait_seconds: float = Field(default=10.0, ge=0)
    # A reserved check that is never settled (its replica died mid-hash) frees the name
    # after this long. Longer than any verify with its queue wait.
    check_lease_seconds: int = Field(default=30, ge=1)

    def delay_after(self, failures: int) -> int:
        """Seconds the account is blocked after its ``failures``-th consecutive failure."""
        beyond = failures - self.free_attempts
        if beyond <= 0:
            return 0
        # Cap the exponent first: 2**beyond for a huge count would be a huge integer.
        delay: int = self.base_delay_seconds * 2 ** min(beyond - 1, 32)
        return min(self.max_delay_seconds, delay)


class SmtpSecurity(StrEnum):
    NONE = "none"  # plain SMTP: a mail catcher on loopback, or a relay inside the cluster
    STARTTLS = "starttls"  # connect in plain text, then upgrade (port 587)
    TLS = "tls"  # implicit TLS from the first byte (port 465)


class MailSettings(BaseModel):
    """Outgoing mail (the transactional outbox, app/mail/). Without ``smtp_host`` nothing
    leaves the machine: each mail is written as an .eml file under ``file_directory`` and
    the log says where, so the embedded default needs no mail server."""

    smtp_host: str | None = None
    # 587 is the submission port with STARTTLS, the common case for a provider's relay.
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # PEM bundle of the CA that signed the relay's certificate (a relay inside the cluster
    # with a private CA). Unset: the system's trust store. Certificates are always verified.
    smtp_ca_file: Path | None = None
    from_address: str = "User Service <no-reply@localhost>"
    # Links in mails start with this: the public URL of the service, as a person's browser
    # reaches it (not the pod's address).
    link_base_url: HttpUrl = HttpUrl("http://127.0.0.1:8000")
    # Connecting and each SMTP command; a hung server must not hold a row's lock for long
    # (each send runs inside the transaction that claimed the row).
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    file_directory: Path = Path(".data/mail")
    # Deliver from the service process. Off where a separate `litestar mail deliver`
    # deployment does it.
    worker_enabled: bool = True
    # Mail an account's owner when it logs in from a client address and user agent pair
    # never seen for it (not on its very first login).
    new_login_notice: bool = True
    # How often an idle worker looks for due messages: the delay a person may wait for a
    # mail on top of the SMTP round trip.
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    # Messages one round sends before the worker samples the outbox gauges and looks again.
    batch_size: int = Field(default=50, ge=1)
    # Retries: the n-th failure waits a random time up to base * 2**(n-1), at most the cap
    # (full jitter: replicas that failed together do not retry together).
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=900.0, gt=0)
    # A message not delivered after this long (or this many tries) is given up and the
    # reason recorded: a reset link mailed two days late is worse than none.
    give_up_after_seconds: int = Field(default=24 * 3600, ge=1)
    max_attempts: int = Field(default=50, ge=1)
    # Sent and given-up rows are deleted by the housekeeping round this long after they
    # ended (pending rows never are). Long enough to answer "was my mail sent, and when?"
    # for a week; not for ever, since each row names a person's address and the table
    # would otherwise grow with every mail.
    keep_sent_seconds: int = Field(default=7 * 24 * 3600, ge=1)

    @property
    def uses_smtp(self) -> bool:
        return self.smtp_host is not None and self.smtp_host.strip() != ""


class AuditSettings(BaseModel):
    """The audit trail of security events (table security_events, /users/me/events)."""

    # Rows older than this are deleted by the housekeeping round.
    retention_days: int = Field(default=180, ge=1)


class LogFormat(StrEnum):
    AUTO = "auto"  # JSON when stdout is not a terminal, colour when it is
    JSON = "json"
    CONSOLE = "console"


class LoggingSettings(BaseModel):
    level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    format: LogFormat = LogFormat.AUTO
    # SQLAlchemy's statement log is very chatty; it has its own level.
    sql_level: str = Field(default="WARNING", pattern=r"^(?i:debug|info|warning|error|critical)$")


class MetricsSettings(BaseModel):
    enabled: bool = True
    # How often the database-pool gauges are sampled.
    pool_sample_seconds: float = Field(default=2.0, gt=0)
    # GET /metrics on a listener of its own, and a 404 on the service port. Unset (the
    # default, for a laptop and for compose behind nginx): /metrics on the service port.
    # The Kubernetes manifests set it, so that whatever reaches the service port (the
    # ingress, any pod the NetworkPolicy lets in) can never read the metrics there.
    port: int | None = Field(default=None, ge=1, le=65535)
    # Where that listener binds. Unset: the service's own address (USER_SERVICE_SERVER__HOST),
    # so the metrics are reachable exactly where the service is, loopback on a laptop and
    # the pod's address in a container; who may connect is the NetworkPolicy's business.
    host: str | None = None


class TracingSettings(BaseModel):
    """Tracing is configured by the standard OTEL_* variables; this only switches it.

    Default (None): on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and OTEL_SDK_DISABLED is not true.
    """

    enabled: bool | None = None

    @property
    def is_enabled(self) -> bool:
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return False
        if self.enabled is not None:
            return self.enabled
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return any(os.environ.get(name) for name in endpoints)


class ServerSettings(BaseModel):
    """How ``python -m app`` runs uvicorn (the container's entry point)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    proxy_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "A second port, for the reverse proxy only: X-Forwarded-For and X-Forwarded-Proto are then "
            "believed only on this port (and only from USER_SERVICE_HTTP__TRUSTED_PROXIES), never on `port`, "
            "where clients that bypass the proxy (in-cluster callers) are counted under their own address "
            "whatever they send. Let only the proxy reach it (Kubernetes: the NetworkPolicy). "
            "Served by `python -m app`."
        ),
    )
    # One process per pod is recommended (README, "Process model"); more workers switch
    # the metrics to prometheus-client's multiprocess mode.
    workers: int = Field(default=1, ge=1)
    # After the drain: how long in-flight requests may take to finish before they are cut.
    graceful_timeout_seconds: int = Field(default=20, ge=1)
    # A request's headers must be complete this long after the connection opens or the
    # previous response ends, or the connection is closed (app/web/connections.py). The proxy
    # in front sends whole header blocks at once; only a slow or silent client needs longer,
    # and such a client is what holds connections open (slowloris).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # An idle kept-alive connection is closed after this long (uvicorn's default). Keep the
    # proxy's upstream keep-alive timeout below it, so the proxy never reuses a connection
    # the service is closing.
    keep_alive_seconds: int = Field(default=5, ge=1)
    # Open connections (or requests in flight) beyond this get an immediate 503 with
    # Retry-After. 1000 is well above the 256 connections the service was measured answering
    # (README, "Performance") and keeps the process under the common 1024 open-file limit
    # with room for the database pool and log files.
    max_concurrent_connections: int = Field(default=1000, ge=1)
    # The event loop uvicorn runs. asyncio's own, by default: measured interleaved against
    # uvloop on 2 cores (3 rounds each, README "Performance"), uvloop served 8-10 % more
    # requests a second at 64 connections but with 2-5 times the p99 (/health/live 25-137
    # against 20-23 ms, /users/me 99-223 against 64-82 ms, at 256 connections 0.9-5.4 s
    # against 0.75-1.0 s), and logins were the same. An objective on tail latency is worth
    # more than a tenth of peak throughput; "uvloop" remains for a deployment that wants it.
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    metrics_dir: Path = Path("/tmp/user-service-metrics")  # noqa: S108 - a per-container tmpfs in production  # nosec B108


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="USER_SERVICE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    environment: Environment = Environment.DEVELOPMENT
    service_name: str = "user-service"
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    login_throttle: LoginThrottleSettings = Field(default_factory=LoginThrottleSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    mfa: MfaSettings = Field(default_factory=MfaSettings)
    # redis://[:password@]host:6379/0. When set, the rate-limit counters and the login
    # throttle live there (shared by every replica, no database writes on failed logins).
    redis_url: SecretStr | None = None
    # Build identity for the build_info metric; the image build sets them.
    build_version: str | None = None
    build_commit: str = "unknown"

    @model_validator(mode="after")
    def _metrics_port_of_its_own(self) -> Settings:
        if self.metrics.port is not None and self.metrics.port == self.server.port:
            raise ValueError(
                "USER_SERVICE_METRICS__PORT must differ from USER_SERVICE_SERVER__PORT "
                "(unset it to serve /metrics on the service port)"
            )
        return self

    @model_validator(mode="after")
    def _proxy_port_of_its_own(self) -> Settings:
        proxy_port = self.server.proxy_port
        if proxy_port is None:
            return self
        if proxy_port in (self.server.port, self.metrics.port):
            raise ValueError(
                "USER_SERVICE_SERVER__PROXY_PORT must differ from USER_SERVICE_SERVER__PORT and "
                "USER_SERVICE_METRICS__PORT"
            )
        if not self.http.trusted_proxies:
            # A proxy port whose headers nobody's are believed would serve the proxy's own
            # address as every client's, and the rate limits would hold everyone back at once.
            raise ValueError(
                "USER_SERVICE_SERVER__PROXY_PORT needs USER_SERVICE_HTTP__TRUSTED_PROXIES: the proxy's addresses"
            )
        return self

    @property
    def metrics_listener(self) -> tuple[str, int] | None:
        """(host, port) of the separate /metrics listener, or None for the service port."""
        if not self.metrics.enabled or self.metrics.port is None:
            return None
        return (self.metrics.host or self.server.host, self.metrics.port)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems: list[str] = []
        if self.db.is_embedded:
            problems.append("USER_SERVICE_DB__URL: the embedded SQLite database is for development only")
        if not self.tokens.has_signing_key:
            problems.append(
                "USER_SERVICE_TOKENS__SIGNING_KEY_FILE (or USER_SERVICE_TOKENS__SIGNING_KEY): "
                "production needs an explicit Ed25519 signing key"
            )
        elif self.tokens.signing_key_file is not None and _is_dev_key_path(self.tokens.signing_key_file):
            problems.append("USER_SERVICE_TOKENS__SIGNING_KEY_FILE: points at the generated development key")
        if not self.mfa.has_encryption_key:
            problems.append(
                "USER_SERVICE_MFA__ENCRYPTION_KEY_FILE (or USER_SERVICE_MFA__ENCRYPTION_KEY): "
                "production needs an explicit key for the TOTP secrets"
            )
        elif self.mfa.encryption_key_file is not None and _is_same_path(self.mfa.encryption_key_file, DEV_MFA_KEY_PATH):
            problems.append("USER_SERVICE_MFA__ENCRYPTION_KEY_FILE: points at the generated development key")
        if self.http.debug:
            problems.append("USER_SERVICE_HTTP__DEBUG: debug mode leaks tracebacks")
        if not self.passwords.meets_owasp_minimum:
            problems.append(
                "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB / __TIME_COST: argon2id below OWASP's minimum "
                f"(m={self.passwords.memory_cost_kib} KiB, t={self.passwords.time_cost}; "
                "at least m=19456 KiB with t=2, or m=47104 KiB with t=1)"
            )
        catch_all = [entry for entry in self.http.trusted_proxies if ipaddress.ip_network(entry).prefixlen == 0]
        if catch_all:
            problems.append(
                f"USER_SERVICE_HTTP__TRUSTED_PROXIES: {', '.join(catch_all)} trusts every peer, so any client "
                "could choose the address its rate limits count; list the proxies' own addresses"
            )
        if self.mail.uses_smtp and self.mail.smtp_username and self.mail.smtp_security is SmtpSecurity.NONE:
            problems.append(
                "USER_SERVICE_MAIL__SMTP_SECURITY: 'none' with USER_SERVICE_MAIL__SMTP_USERNAME set would send "
                "the SMTP password in clear text; use starttls or tls"
            )
        link = self.mail.link_base_url
        if link.scheme != "https" and not _is_loopback_host(link.host):
            problems.append(
                f"USER_SERVICE_MAIL__LINK_BASE_URL: {link} would send password-reset, verification and "
                "email-change tokens over plain HTTP; use https (plain HTTP only on a loopback host)"
            )
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    def disabled_protections(self) -> list[str]:
        """Abuse protections turned off: allowed (a deployment may do this at its own edge),
        but production says so loudly at start-up."""
        off = []
        if not self.rate_limits.enabled:
            off.append("USER_SERVICE_RATE_LIMITS__ENABLED=false: no per-address limits on login, registration, refresh")
        if not self.login_throttle.enabled:
            off.append("USER_SERVICE_LOGIN_THROTTLE__ENABLED=false: unlimited password guesses per account")
        if "*" in self.http.cors_allow_origins:
            off.append("USER_SERVICE_HTTP__CORS_ALLOW_ORIGINS=*: any web page may call the API from a browser")
        return off


def _is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_dev_key_path(path: Path) -> bool:
    return _is_same_path(path, DEV_SIGNING_KEY_PATH)


def _is_same_path(path: Path, other: Path) -> bool:
    try:
        return path.resolve() == other.resolve()
    except OSError:
        return False
