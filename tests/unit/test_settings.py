"""Settings: USER_SERVICE_* environment variables, and the refusal of unsafe production set-ups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app.settings import (
    EMBEDDED_DATABASE_URL,
    DatabaseSettings,
    Environment,
    HttpSettings,
    LoginThrottleSettings,
    MailSettings,
    MetricsSettings,
    PasswordSettings,
    RateLimitSettings,
    ServerSettings,
    Settings,
    SmtpSecurity,
    TokenSettings,
)

POSTGRES_URL = "postgresql+asyncpg://svc:secret@db.internal:5432/users"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No USER_SERVICE_* variable and no .env file of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("USER_SERVICE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def mfa_key_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production needs a TOTP encryption key besides the signing key; the tests below
    about other settings take it as given (the ones about the key itself unset it)."""
    monkeypatch.setenv("USER_SERVICE_MFA__ENCRYPTION_KEY_FILE", "/run/secrets/mfa/mfa.key")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing.pem"
    path.parent.mkdir()
    path.write_text("not checked by settings")
    return path


# --------------------------------------------------------------------------- defaults


def test_development_defaults_to_the_embedded_database() -> None:
    settings = Settings()
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.db.url == EMBEDDED_DATABASE_URL
    assert settings.db.is_embedded
    assert settings.db.should_migrate_on_start
    assert settings.tokens.verification_key_files == []
    assert settings.http.max_body_bytes == 64 * 1024


def test_postgres_does_not_migrate_on_start_unless_asked() -> None:
    assert DatabaseSettings(url=POSTGRES_URL).should_migrate_on_start is False
    assert DatabaseSettings(url=POSTGRES_URL, migrate_on_start=True).should_migrate_on_start is True
    assert DatabaseSettings(migrate_on_start=False).should_migrate_on_start is False


# --------------------------------------------------------------------------- production guard rails


def test_production_refuses_the_embedded_database(key_file: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(environment="production", tokens=TokenSettings(signing_key_file=key_file))
    message = str(caught.value)
    assert "USER_SERVICE_DB__URL" in message
    assert "USER_SERVICE_TOKENS__SIGNING_KEY_FILE" not in message


def test_production_refuses_a_missing_signing_key() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(environment="production", db=DatabaseSettings(url=POSTGRES_URL))
    message = str(caught.value)
    assert "USER_SERVICE_TOKENS__SIGNING_KEY_FILE" in message
    assert "USER_SERVICE_DB__URL" not in message


def test_production_refuses_a_missing_totp_encryption_key(monkeypatch: pytest.MonkeyPatch, key_file: Path) -> None:
    monkeypatch.delenv("USER_SERVICE_MFA__ENCRYPTION_KEY_FILE")
    with pytest.raises(ValidationError) as caught:
        Settings(
            environment="production",
            db=DatabaseSettings(url=POSTGRES_URL),
            tokens=TokenSettings(signing_key_file=key_file),
        )
    assert "USER_SERVICE_MFA__ENCRYPTION_KEY_FILE" in str(caught.value)
    monkeypatch.setenv("USER_SERVICE_MFA__ENCRYPTION_KEY", "a" * 44)
    assert Settings(
        environment="production", db=DatabaseSettings(url=POSTGRES_URL), tokens=TokenSettings(signing_key_file=key_file)
    ).mfa.has_encryption_key


def test_production_refuses_the_generated_development_totp_key(monkeypatch: pytest.MonkeyPatch, key_file: Path) -> None:
    monkeypatch.setenv("USER_SERVICE_MFA__ENCRYPTION_KEY_FILE", ".data/dev-mfa-key")
    with pytest.raises(ValidationError, match="MFA__ENCRYPTION_KEY_FILE: points at the generated development key"):
        Settings(
            environment="production",
            db=DatabaseSettings(url=POSTGRES_URL),
            tokens=TokenSettings(signing_key_file=key_file),
        )


def test_production_reports_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(environment="production", http=HttpSettings(debug=True))
    message = str(caught.value)
    assert "USER_SERVICE_DB__URL" in message
    assert "USER_SERVICE_TOKENS__SIGNING_KEY_FILE" in message
    assert "USER_SERVICE_HTTP__DEBUG" in message


def test_production_refuses_debug_mode(key_file: Path) -> None:
    with pytest.raises(ValidationError, match="USER_SERVICE_HTTP__DEBUG"):
        Settings(
            environment="production",
            db=DatabaseSettings(url=POSTGRES_URL),
            tokens=TokenSettings(signing_key_file=key_file),
            http=HttpSettings(debug=True),
        )


def test_production_refuses_the_generated_development_key() -> None:
    with pytest.raises(ValidationError, match="development key"):
        Settings(
            environment="production",
            db=DatabaseSettings(url=POSTGRES_URL),
            tokens=TokenSettings(signing_key_file=Path(".data/dev-signing-key.pem")),
        )


def test_production_with_postgres_and_a_key_file_starts(key_file: Path) -> None:
    settings = Settings(
        environment="production",
        db=DatabaseSettings(url=POSTGRES_URL),
        tokens=TokenSettings(signing_key_file=key_file),
    )
    assert settings.environment is Environment.PRODUCTION
    assert settings.db.url == POSTGRES_URL
    assert settings.tokens.signing_key_file == key_file


def test_production_accepts_an_inline_signing_key() -> None:
    settings = Settings(
        environment="production",
        db=DatabaseSettings(url=POSTGRES_URL),
        tokens=TokenSettings(signing_key=SecretStr("-----BEGIN PRIVATE KEY-----...")),
    )
    assert settings.tokens.has_signing_key
    assert "BEGIN PRIVATE KEY" not in repr(settings)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_other_environments_accept_the_embedded_database(environment: str) -> None:
    settings = Settings(environment=environment, http=HttpSettings(debug=True))
    assert settings.db.is_embedded


# --------------------------------------------------------------------------- environment variables


def test_prefixed_and_nested_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_SERVICE_ENVIRONMENT", "test")
    monkeypatch.setenv("USER_SERVICE_SERVICE_NAME", "accounts")
    monkeypatch.setenv("USER_SERVICE_DB__URL", POSTGRES_URL)
    monkeypatch.setenv("USER_SERVICE_DB__POOL_SIZE", "3")
    monkeypatch.setenv("USER_SERVICE_PASSWORDS__MEMORY_COST_KIB", "1024")
    monkeypatch.setenv("USER_SERVICE_PASSWORDS__PWNED_CHECK_ENABLED", "true")
    monkeypatch.setenv("USER_SERVICE_TOKENS__ACCESS_TTL_SECONDS", "300")
    monkeypatch.setenv("USER_SERVICE_TOKENS__SIGNING_KEY_FILE", "/run/secrets/signing.pem")
    monkeypatch.setenv("USER_SERVICE_HTTP__MAX_BODY_BYTES", "2048")

    settings = Settings()

    assert settings.environment is Environment.TEST
    assert settings.service_name == "accounts"
    assert settings.db.url == POSTGRES_URL
    assert settings.db.pool_size == 3
    assert settings.passwords.memory_cost_kib == 1024
    assert settings.passwords.pwned_check_enabled is True
    assert settings.tokens.access_ttl_seconds == 300
    assert settings.tokens.signing_key_file == Path("/run/secrets/signing.pem")
    assert settings.http.max_body_bytes == 2048
    # Fields that were not set keep their defaults.
    assert settings.passwords.time_cost == 2
    assert settings.db.max_overflow == 0


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB__URL", POSTGRES_URL)
    monkeypatch.setenv("ENVIRONMENT", "production")
    settings = Settings()
    assert settings.db.url == EMBEDDED_DATABASE_URL
    assert settings.environment is Environment.DEVELOPMENT


def test_production_from_environment_variables_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_SERVICE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "USER_SERVICE_DB__URL" in str(caught.value)

    monkeypatch.setenv("USER_SERVICE_DB__URL", POSTGRES_URL)
    monkeypatch.setenv("USER_SERVICE_TOKENS__SIGNING_KEY_FILE", "/run/secrets/signing.pem")
    assert Settings().environment is Environment.PRODUCTION


def test_out_of_range_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_SERVICE_PASSWORDS__POOL_SIZE", "0")
    with pytest.raises(ValidationError, match="pool_size"):
        Settings()


def test_dot_env_file_in_the_working_directory_is_read(isolated_environment: Path) -> None:
    (isolated_environment / ".env").write_text(f"USER_SERVICE_DB__URL={POSTGRES_URL}\nUSER_SERVICE_ENVIRONMENT=test\n")
    settings = Settings()
    assert settings.db.url == POSTGRES_URL
    assert settings.environment is Environment.TEST


def test_environment_variable_beats_dot_env_file(isolated_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated_environment / ".env").write_text("USER_SERVICE_SERVICE_NAME=from-file\n")
    monkeypatch.setenv("USER_SERVICE_SERVICE_NAME", "from-env")
    assert Settings().service_name == "from-env"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.pem,b.pem", [Path("a.pem"), Path("b.pem")]),
        (" /keys/a.pem , /keys/b.pem ", [Path("/keys/a.pem"), Path("/keys/b.pem")]),
        ("only.pem", [Path("only.pem")]),
        ("a.pem,,b.pem,", [Path("a.pem"), Path("b.pem")]),
        ("", []),
    ],
)
def test_verification_key_files_are_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[Path]
) -> None:
    monkeypatch.setenv("USER_SERVICE_TOKENS__VERIFICATION_KEY_FILES", raw)
    assert Settings().tokens.verification_key_files == expected


def test_verification_key_files_accept_a_list_in_code() -> None:
    tokens = TokenSettings(verification_key_files=[Path("a.pem"), Path("b.pem")])
    assert tokens.verification_key_files == [Path("a.pem"), Path("b.pem")]
    assert TokenSettings(verification_key_files="x.pem,y.pem").verification_key_files == [
        Path("x.pem"),
        Path("y.pem"),
    ]


# --------------------------------------------------------------------------- settings that defeat protections


def _production(key_file: Path, **groups: object) -> Settings:
    return Settings(
        environment="production",
        db=DatabaseSettings(url=POSTGRES_URL),
        tokens=TokenSettings(signing_key_file=key_file),
        **groups,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(("memory_kib", "passes"), [(8, 1), (19_456, 1), (12_288, 2), (47_103, 1)])
def test_production_refuses_argon2_below_owasp(key_file: Path, memory_kib: int, passes: int) -> None:
    weak = PasswordSettings(memory_cost_kib=memory_kib, time_cost=passes)
    with pytest.raises(ValidationError, match="below OWASP's minimum") as caught:
        _production(key_file, passwords=weak)
    assert f"m={memory_kib} KiB, t={passes}" in str(caught.value)


@pytest.mark.parametrize(("memory_kib", "passes"), [(47_104, 1), (19_456, 2), (7_168, 5), (47_104, 2)])
def test_production_accepts_each_owasp_configuration(key_file: Path, memory_kib: int, passes: int) -> None:
    settings = _production(key_file, passwords=PasswordSettings(memory_cost_kib=memory_kib, time_cost=passes))
    assert settings.passwords.meets_owasp_minimum


@pytest.mark.parametrize("catch_all", ["0.0.0.0/0", "::/0"])
def test_production_refuses_trusting_every_peer_as_a_proxy(key_file: Path, catch_all: str) -> None:
    with pytest.raises(ValidationError, match="USER_SERVICE_HTTP__TRUSTED_PROXIES") as caught:
        _production(key_file, http=HttpSettings(trusted_proxies=["10.0.0.0/8", catch_all]))
    assert catch_all in str(caught.value)
    assert "10.0.0.0/8" not in str(caught.value)


def test_development_allows_what_production_refuses() -> None:
    settings = Settings(
        passwords=PasswordSettings(memory_cost_kib=8, time_cost=1), http=HttpSettings(trusted_proxies=["0.0.0.0/0"])
    )
    assert not settings.passwords.meets_owasp_minimum


def test_turned_off_protections_are_named(key_file: Path) -> None:
    settings = _production(
        key_file,
        rate_limits=RateLimitSettings(enabled=False),
        login_throttle=LoginThrottleSettings(enabled=False),
        http=HttpSettings(cors_allow_origins=["*"]),
    )
    named = " ".join(settings.disabled_protections())
    assert "USER_SERVICE_RATE_LIMITS__ENABLED=false" in named
    assert "USER_SERVICE_LOGIN_THROTTLE__ENABLED=false" in named
    assert "USER_SERVICE_HTTP__CORS_ALLOW_ORIGINS=*" in named
    assert _production(key_file).disabled_protections() == []


def test_production_refuses_an_smtp_password_in_clear_text(key_file: Path) -> None:
    with pytest.raises(ValidationError, match="USER_SERVICE_MAIL__SMTP_SECURITY"):
        Settings(
            environment="production",
            db=DatabaseSettings(url=POSTGRES_URL),
            tokens=TokenSettings(signing_key_file=key_file),
            mail=MailSettings(smtp_host="smtp.example.com", smtp_security="none", smtp_username="svc"),
        )


def test_production_accepts_plain_smtp_without_a_username_and_tls_with_one(key_file: Path) -> None:
    for mail in (
        MailSettings(smtp_host="relay.internal", smtp_security="none"),
        MailSettings(smtp_host="smtp.example.com", smtp_security="tls", smtp_username="svc"),
    ):
        Settings(
            environment="production",
            db=DatabaseSettings(url=POSTGRES_URL),
            tokens=TokenSettings(signing_key_file=key_file),
            mail=mail,
        )


def test_production_refuses_mailed_links_over_plain_http_except_on_loopback(key_file: Path) -> None:
    def production(link: str) -> Settings:
        return Settings(
            environment="production",
            db=DatabaseSettings(url=POSTGRES_URL),
            tokens=TokenSettings(signing_key_file=key_file),
            mail=MailSettings(link_base_url=link),
        )

    for clear in ("http://users.example.com", "http://10.0.0.5:8000", "http://localhost.example.com"):
        with pytest.raises(ValidationError, match="USER_SERVICE_MAIL__LINK_BASE_URL"):
            production(clear)
    for fine in ("https://users.example.com", "http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        assert str(production(fine).mail.link_base_url).startswith(fine)
    assert MailSettings(link_base_url="http://users.example.com")  # development takes anything


def test_mail_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_SERVICE_MAIL__SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("USER_SERVICE_MAIL__SMTP_SECURITY", "tls")
    monkeypatch.setenv("USER_SERVICE_MAIL__SMTP_PASSWORD", "s3cret")
    mail = Settings().mail
    assert mail.uses_smtp
    assert mail.smtp_security is SmtpSecurity.TLS
    assert "s3cret" not in repr(mail)
    # Without a host: no SMTP, mail goes to files.
    assert not MailSettings().uses_smtp


def test_a_shed_is_never_held_longer_than_its_retry_after() -> None:
    with pytest.raises(ValidationError, match="shed_delay_seconds"):
        PasswordSettings(retry_after_seconds=1, shed_delay_seconds=1.5)
    assert PasswordSettings(retry_after_seconds=2, shed_delay_seconds=1.5).shed_delay_seconds == 1.5


@pytest.mark.parametrize("clash", ["port", "metrics"])
def test_the_proxy_port_must_be_a_port_of_its_own(clash: str) -> None:
    server = ServerSettings(port=8000, proxy_port=8000 if clash == "port" else 8001)
    metrics = MetricsSettings(port=8001 if clash == "metrics" else None)
    with pytest.raises(ValidationError, match="USER_SERVICE_SERVER__PROXY_PORT must differ"):
        Settings(_env_file=None, server=server, metrics=metrics, http=HttpSettings(trusted_proxies=["10.0.0.0/8"]))


def test_a_proxy_port_names_the_proxies_it_trusts() -> None:
    with pytest.raises(
        ValidationError, match="USER_SERVICE_SERVER__PROXY_PORT needs USER_SERVICE_HTTP__TRUSTED_PROXIES"
    ):
        Settings(_env_file=None, server=ServerSettings(proxy_port=8001))
    assert (
        Settings(
            _env_file=None, server=ServerSettings(proxy_port=8001), http=HttpSettings(trusted_proxies=["10.0.0.0/8"])
        ).server.proxy_port
        == 8001
    )
