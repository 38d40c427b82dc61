"""The admin API's authentication core (``rafka_shards.security.admin_auth``): the Authorization header, the token
file, passwords against SCRAM credentials made by the project's SCRAM helpers, the cache, and Redpanda's access
rules."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from rafka_shards.admin.ports import AdminSecurity
from rafka_shards.config import ConfigError, load_config
from rafka_shards.security.admin_auth import (
    AUTHORIZATION_BYTES_MAX,
    Access,
    AdminPolicy,
    AuthorizationError,
    BasicCredentials,
    BearerToken,
    BootstrapUser,
    PasswordCache,
    TokenFile,
    TokensFileError,
    TokensReloaded,
    TokensReloadFailed,
    basic_header,
    parse_authorization,
    parse_bootstrap_user,
    parse_tokens,
    verify_password,
)
from rafka_shards.security.sasl import ScramMechanism, make_credential

TOKEN = "tok-0123456789abcdef"
OTHER = "tok-fedcba9876543210"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ---- the Authorization header ---------------------------------------------------------------------------------------


def test_basic_credentials_are_parsed() -> None:
    assert parse_authorization(basic_header("alice", "pa:ss wörd")) == BasicCredentials("alice", "pa:ss wörd".encode())
    assert parse_authorization("basic " + _b64(b"bob:x")) == BasicCredentials("bob", b"x")  # scheme case-insensitive


def test_bearer_tokens_are_parsed() -> None:
    assert parse_authorization(f"Bearer {TOKEN}") == BearerToken(TOKEN)
    assert parse_authorization(f"BEARER  {TOKEN} ") == BearerToken(TOKEN)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Digest username=alice", "Basic or Bearer"),
        ("Basic", "base64"),
        ("Basic !!!notbase64", "base64"),
        ("Basic " + _b64(b"no-colon"), "user:password"),
        ("Basic " + _b64(b":secret-pw"), "a user and a password"),
        ("Basic " + _b64(b"alice:"), "a user and a password"),
        ("Basic " + _b64(b"alice:\xff\xfe"), "UTF-8"),
        ("Basic " + _b64(b"alice:" + b"p" * 2000), "longer than"),
        ("Bearer two words", "one word"),
        ("Bearer", "one word"),
        ("Basic " + "A" * AUTHORIZATION_BYTES_MAX, "longer than"),
    ],
)
def test_malformed_headers_are_refused_without_the_credential(header: str, reason: str) -> None:
    with pytest.raises(AuthorizationError) as e:
        parse_authorization(header)
    assert reason in str(e.value)
    assert "secret-pw" not in str(e.value) and "notbase64" not in str(e.value)


def test_the_password_stays_out_of_repr() -> None:
    assert "hunter2" not in repr(BasicCredentials("alice", b"hunter2"))
    assert TOKEN not in repr(BearerToken(TOKEN))


# ---- passwords against SCRAM credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", list(ScramMechanism))
def test_a_password_verifies_against_its_credential_only(mechanism: ScramMechanism) -> None:
    credential = make_credential(mechanism, b"correct horse")
    assert verify_password(credential, b"correct horse")
    assert not verify_password(credential, b"correct horsf")
    assert not verify_password(make_credential(mechanism, b"correct horse", iterations=8192), b"wrong")
    assert verify_password(make_credential(mechanism, b"correct horse", iterations=8192), b"correct horse")


def test_the_cache_is_keyed_by_the_credential_so_a_new_password_misses_it() -> None:
    cache = PasswordCache(entries_max=2, key=b"k" * 32)
    old = make_credential(ScramMechanism.SCRAM_SHA_256, b"old-pw")
    assert cache.get("alice", old, b"old-pw") is None
    cache.put("alice", old, b"old-pw", True)
    cache.put("alice", old, b"guess", False)
    assert cache.get("alice", old, b"old-pw") is True and cache.get("alice", old, b"guess") is False
    assert cache.get("bob", old, b"old-pw") is None  # another user with the same credential bytes
    new = make_credential(ScramMechanism.SCRAM_SHA_256, b"new-pw")  # the password changed: a new salt and keys
    assert cache.get("alice", new, b"old-pw") is None
    cache.put("alice", new, b"new-pw", True)
    assert len(cache) == 2  # bounded: the least recently used entry went
    # guess was used after old-pw, so old-pw went
    assert cache.get("alice", old, b"old-pw") is None and cache.get("alice", old, b"guess") is False


def test_the_cache_keeps_no_password() -> None:
    cache = PasswordCache()
    credential = make_credential(ScramMechanism.SCRAM_SHA_512, b"hunter2-secret")
    cache.put("alice", credential, b"hunter2-secret", True)
    assert all(b"hunter2" not in k for k in cache._entries)


# ---- the token file -------------------------------------------------------------------------------------------------


def test_a_token_file_with_comments_and_blank_lines() -> None:
    tokens = parse_tokens(f"# ops tokens\n\n{TOKEN} User:ops\n   {OTHER}\tUser:ci  \n")
    assert sorted(tokens.values()) == ["User:ci", "User:ops"]
    assert all(TOKEN.encode() not in k for k in tokens)  # digests only


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"{TOKEN}\n", "line 1: expected 'TOKEN PRINCIPAL'"),
        (f"# c\n{TOKEN} User:a extra\n", "line 2: expected"),
        (f"{TOKEN} ops\n", "line 1: 'ops' is not a principal"),
        ("short User:ops\n", "at least 16"),
        (f"{TOKEN}, User:ops\n", "letters, digits"),
        (f"{TOKEN} User:a\n{TOKEN} User:b\n", "line 2: this token is already"),
    ],
)
def test_bad_token_files_name_the_line_never_the_token(text: str, reason: str) -> None:
    with pytest.raises(TokensFileError) as e:
        parse_tokens(text)
    assert reason in str(e.value)
    assert TOKEN not in str(e.value)


def _rewrite(path: Path, text: str, bump_ns: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_ns))  # a visible change even within one mtime tick


def test_the_token_file_is_reread_when_it_changes_and_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN} User:ops\n")
    tokens = TokenFile(path, now_ms=0, check_interval_ms=1000)
    assert tokens.principal(TOKEN) == "User:ops" and tokens.principal(OTHER) is None
    _rewrite(path, f"{OTHER} User:ci\n", 1_000_000_000)
    assert tokens.maybe_reload(500) is None  # not time to look yet
    assert tokens.principal(TOKEN) == "User:ops"
    assert tokens.maybe_reload(1000) == TokensReloaded(1)
    assert tokens.principal(TOKEN) is None and tokens.principal(OTHER) == "User:ci"
    assert tokens.maybe_reload(2000) is None  # unchanged
    _rewrite(path, f"{OTHER}\n", 2_000_000_000)  # broken: no token counts until it is fixed
    failed = tokens.maybe_reload(3000)
    assert isinstance(failed, TokensReloadFailed) and "line 1" in failed.error and OTHER not in failed.error
    assert tokens.principal(OTHER) is None
    assert tokens.maybe_reload(4000) is None  # reported once
    path.unlink()
    assert isinstance(tokens.maybe_reload(5000), TokensReloadFailed)
    path.write_text(f"{TOKEN} User:ops\n")
    assert tokens.maybe_reload(6000) == TokensReloaded(1) and tokens.principal(TOKEN) == "User:ops"


def test_a_missing_token_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(TokensFileError, match="No such file"):
        TokenFile(tmp_path / "absent", now_ms=0)


# ---- who may do what (Redpanda's model) -----------------------------------------------------------------------------


def test_without_require_auth_everything_is_open() -> None:
    policy = AdminPolicy(require_auth=False)
    assert {policy.access(m, p) for m in ("GET", "POST", "DELETE") for p in ("/v1/topics", "/metrics")} == {Access.OPEN}


def test_with_require_auth_reads_need_a_user_and_changes_a_superuser() -> None:
    policy = AdminPolicy(require_auth=True, super_users=frozenset({"User:admin"}), metrics_open=True)
    assert policy.access("GET", "/v1/status/ready") is Access.OPEN
    assert policy.access("GET", "/v1/status/live") is Access.OPEN
    assert policy.access("GET", "/metrics") is Access.OPEN
    assert policy.access("GET", "/v1/topics") is Access.AUTHENTICATED
    assert policy.access("head", "/v1/topics") is Access.AUTHENTICATED
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert policy.access(method, "/v1/security/users") is Access.SUPERUSER
    assert policy.allows(Access.SUPERUSER, "User:admin") and not policy.allows(Access.SUPERUSER, "User:bob")
    assert policy.allows(Access.AUTHENTICATED, "User:bob")
    closed = AdminPolicy(require_auth=True, metrics_open=False)
    assert closed.access("GET", "/metrics") is Access.AUTHENTICATED
    assert closed.access("GET", "/v1/status/ready") is Access.OPEN


# ---- the settings, checked at start-up ------------------------------------------------------------------------------


def _config(tmp_path: Path, **flags: str) -> AdminSecurity:
    return AdminSecurity.from_config(load_config(flags={"data_dir": str(tmp_path / "data"), **flags}, environ={}))


def test_admin_security_settings_are_checked_with_the_setting_named(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} User:ops\n")
    security = _config(
        tmp_path, admin_api_require_auth="true", admin_api_tokens_file=str(tokens), super_users="User:ops; User:a"
    )
    assert security.require_auth and security.tokens_file == tokens and security.tls is None
    assert security.super_users == frozenset({"User:ops", "User:a"}) and security.scheme == "http"
    assert security.failed_auth_delay_ms == 100 and security.metrics_open
    tokens.write_text(f"{TOKEN}\n")
    with pytest.raises(ConfigError, match=r"admin_api_tokens_file: .*line 1") as e:
        _config(tmp_path, admin_api_tokens_file=str(tokens))
    assert TOKEN not in str(e.value)
    with pytest.raises(ConfigError, match="super_users: 'ops' is not a principal"):
        _config(tmp_path, super_users="ops")
    with pytest.raises(ConfigError, match="admin_ssl_ca_file: set without admin_ssl_cert_file"):
        _config(tmp_path, admin_ssl_ca_file=str(tokens))
    with pytest.raises(ConfigError, match="admin_ssl_cert_file"):
        _config(tmp_path, admin_ssl_cert_file=str(tmp_path / "absent.crt"))


def test_the_bootstrap_user_setting() -> None:
    assert parse_bootstrap_user("boot:s3cret:pw") == BootstrapUser("boot", b"s3cret:pw", ScramMechanism.SCRAM_SHA_256)
    assert parse_bootstrap_user("boot:pw:scram-sha-512") == BootstrapUser("boot", b"pw", ScramMechanism.SCRAM_SHA_512)
    for bad in ("boot", "boot:", ":pw", "a\x00b:pw"):
        with pytest.raises(ConfigError, match="bootstrap_user") as e:
            parse_bootstrap_user(bad)
        assert "pw" not in str(e.value).removeprefix("bootstrap_user: expected NAME:PASSWORD[:MECHANISM]")
    assert "s3cret" not in repr(parse_bootstrap_user("boot:s3cret"))
