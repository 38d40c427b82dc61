"""TLS for the listeners (rafka_shards/security/tls.py): settings, contexts, reloading, principals.

Certificates are made fresh by ``tests/certs.py`` for every module run. The rule and distinguished-name
expectations marked "JDK" were produced by Java 17: ``X509Certificate.getSubjectX500Principal().getName()`` on
the same certificates, and Kafka's ``SslPrincipalMapper`` logic on the same rules. The Kafka cases are ported from
``SslPrincipalMapperTest``. Servers listen on 127.0.0.1 only, and every wait is bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.x509.name import _ASN1Type  # the value's string type; no public way to choose it
from cryptography.x509.oid import NameOID

from rafka_shards.security import tls
from rafka_shards.security.tls import (
    ANONYMOUS,
    TLS_HANDSHAKE_TIMEOUT_S,
    ClientAuth,
    NoMatchingRule,
    PeerCertificateError,
    PrincipalError,
    PrincipalMapper,
    Reloaded,
    ReloadFailed,
    ReloadingContext,
    TlsConfigError,
    TlsSettings,
    client_context,
    distinguished_name,
    parse_principal_rules,
    parse_tls_settings,
    principal_from_certificate,
    server_context,
)
from tests.certs import Issued, Pki, issue, make_pki, name, server_cert

WAIT_S = 5.0  # the bound on every network wait in this module
SHORT_HANDSHAKE_TIMEOUT_S = 0.3  # the listener's TLS_HANDSHAKE_TIMEOUT_S, shortened so a test can wait it out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def required(pki: Pki, rules: str = "DEFAULT") -> TlsSettings:
    return TlsSettings(
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        ca_file=pki.ca.cert_file,
        client_auth=ClientAuth.REQUIRED,
        principal_mapping_rules=rules,
    )


def client_ctx(pki: Pki, identity: Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_file))
    if identity is not None:
        ctx.load_cert_chain(identity.cert_file, identity.key_file)
    return ctx


# ---------------------------------------------------------------------------------------------------------------
# Settings


def test_parse_reads_every_setting_under_its_prefix(pki: Pki, tmp_path: Path) -> None:
    enc = issue(tmp_path, "enc", pki.ca, name((NameOID.COMMON_NAME, "localhost")), server=True, password=b"s3cret")
    settings = parse_tls_settings(
        {
            "kafka_tls_cert_file": str(enc.cert_file),
            "kafka_tls_key_file": str(enc.key_file),
            "kafka_tls_key_password": "s3cret",
            "kafka_tls_ca_file": str(pki.ca.cert_file),
            "kafka_tls_client_auth": "Requested",
            "kafka_tls_ciphers": "ECDHE+AESGCM",
            "kafka_tls_min_version": "TLSv1.2",
            "kafka_tls_principal_mapping_rules": "RULE:^CN=(.*?)(,.*)?$/$1/L, DEFAULT",
            "listen": "127.0.0.1:9092",  # other settings of the same mapping are not ours
        },
        prefix="kafka_tls_",
    )
    assert settings == TlsSettings(
        cert_file=enc.cert_file,
        key_file=enc.key_file,
        key_password="s3cret",
        ca_file=pki.ca.cert_file,
        client_auth=ClientAuth.REQUESTED,
        ciphers="ECDHE+AESGCM",
        min_version="TLSv1.2",
        principal_mapping_rules="RULE:^CN=(.*?)(,.*)?$/$1/L, DEFAULT",
    )
    assert "s3cret" not in repr(settings)


def test_parse_defaults_and_a_key_kept_in_the_certificate_file(pki: Pki, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.server.key_file.read_bytes() + pki.server.cert_file.read_bytes())
    settings = parse_tls_settings({"cert_file": str(combined), "ca_file": ""})
    assert settings == TlsSettings(cert_file=combined)
    assert (settings.client_auth, settings.min_version, settings.principal_mapping_rules) == (
        ClientAuth.NONE,
        "TLSv1.2",
        "DEFAULT",
    )


def _bad(pki: Pki, tmp: Path, what: str) -> dict[str, str]:
    """A complete, valid mapping with one thing wrong."""
    garbage = tmp / "garbage.pem"
    garbage.write_text("hello\n")
    empty = tmp / "empty.pem"
    empty.write_text("")
    enc = issue(tmp, "enc", pki.ca, name((NameOID.COMMON_NAME, "enc")), password=b"right")
    corrupt = tmp / "corrupt.crt"
    corrupt.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    good = {
        "cert_file": str(pki.server.cert_file),
        "key_file": str(pki.server.key_file),
        "ca_file": str(pki.ca.cert_file),
        "client_auth": "required",
    }
    changes: dict[str, dict[str, str]] = {
        "no cert_file": {"cert_file": ""},
        "missing cert": {"cert_file": str(tmp / "nope.crt")},
        "cert is a directory": {"cert_file": str(tmp)},
        "cert is garbage": {"cert_file": str(garbage)},
        "cert does not parse": {"cert_file": str(corrupt)},
        "cert is empty": {"cert_file": str(empty)},
        "key is garbage": {"key_file": str(garbage)},
        "key of another cert": {"key_file": str(pki.client.key_file)},
        "encrypted key, no password": {"cert_file": str(enc.cert_file), "key_file": str(enc.key_file)},
        "wrong password": {"cert_file": str(enc.cert_file), "key_file": str(enc.key_file), "key_password": "wrong"},
        "no key anywhere": {"key_file": ""},
        "ca is garbage": {"ca_file": str(garbage)},
        "ca is a key": {"ca_file": str(pki.ca.key_file)},
        "required without ca": {"ca_file": ""},
        "client_auth typo": {"client_auth": "always"},
        "TLSv1.1": {"min_version": "TLSv1.1"},
        "TLS1.2 spelled wrong": {"min_version": "tls1.2"},
        "ciphers select nothing": {"ciphers": "NOPE-NOTHING"},
        "ciphers with TLSv1.3": {"ciphers": "ECDHE+AESGCM", "min_version": "TLSv1.3"},
        "rules malformed": {"principal_mapping_rules": "RULE:^CN=(.*)$/$1/X"},
        "rules regex": {"principal_mapping_rules": "RULE:^CN=(.*$/$1/"},
        "unknown setting": {"cert_flie": "x"},
    }
    return {**good, **changes[what]}


@pytest.mark.parametrize(
    ("what", "setting", "detail"),
    [
        ("no cert_file", "cert_file", "required"),
        ("missing cert", "cert_file", "no such file"),
        ("cert is a directory", "cert_file", "is a directory"),
        ("cert is garbage", "cert_file", "no PEM certificate"),
        ("cert does not parse", "cert_file", "does not parse"),
        ("cert is empty", "cert_file", "empty"),
        ("key is garbage", "key_file", "no PEM private key"),
        ("key of another cert", "key_file", "does not match the certificate"),
        ("encrypted key, no password", "key_password", "is encrypted"),
        ("wrong password", "key_password", "does not decrypt"),
        ("no key anywhere", "cert_file", "key_file is not set"),
        ("ca is garbage", "ca_file", "no PEM certificate"),
        ("ca is a key", "ca_file", "no PEM certificate"),
        ("required without ca", "ca_file", "required with client_auth=required"),
        ("client_auth typo", "client_auth", "'always' is not one of none, requested, required"),
        ("TLSv1.1", "min_version", "below TLSv1.2 are not allowed"),
        ("TLS1.2 spelled wrong", "min_version", "'tls1.2' is not one of TLSv1.2, TLSv1.3"),
        ("ciphers select nothing", "ciphers", "selects no cipher"),
        ("ciphers with TLSv1.3", "ciphers", "cannot restrict TLS 1.3"),
        ("rules malformed", "principal_mapping_rules", "unmatched substring: `X`"),
        ("rules regex", "principal_mapping_rules", "does not compile"),
        ("unknown setting", "cert_flie", "unknown TLS setting"),
    ],
)
def test_parse_errors_name_the_setting(pki: Pki, tmp_path: Path, what: str, setting: str, detail: str) -> None:
    mapping = {"admin_tls_" + k: v for k, v in _bad(pki, tmp_path, what).items()}
    with pytest.raises(TlsConfigError) as caught:
        parse_tls_settings(mapping, prefix="admin_tls_")
    assert caught.value.setting == "admin_tls_" + setting, str(caught.value)
    assert str(caught.value).startswith(f"admin_tls_{setting}: ")
    assert detail in str(caught.value)


@pytest.mark.parametrize(
    ("client_auth", "mode"),
    [
        (ClientAuth.NONE, ssl.CERT_NONE),
        (ClientAuth.REQUESTED, ssl.CERT_OPTIONAL),
        (ClientAuth.REQUIRED, ssl.CERT_REQUIRED),
    ],
)
def test_server_context(pki: Pki, client_auth: ClientAuth, mode: ssl.VerifyMode) -> None:
    ctx = server_context(
        TlsSettings(pki.server.cert_file, pki.server.key_file, ca_file=pki.ca.cert_file, client_auth=client_auth)
    )
    assert ctx.verify_mode == mode
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.cert_store_stats()["x509_ca"] == 1
    tls13 = server_context(TlsSettings(pki.server.cert_file, pki.server.key_file, min_version="TLSv1.3"))
    assert tls13.minimum_version == ssl.TLSVersion.TLSv1_3
    restricted = server_context(TlsSettings(pki.server.cert_file, pki.server.key_file, ciphers="ECDHE+AESGCM"))
    tls12_suites = {c["name"] for c in restricted.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12_suites and all("GCM" in s and "ECDHE" in s for s in tls12_suites)


# ---------------------------------------------------------------------------------------------------------------
# Principal mapping rules (Kafka's SslPrincipalMapperTest, and JDK results)


@pytest.mark.parametrize(
    "rules",
    [
        "DEFAULT",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
        "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
        "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
        "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
        "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
    ],
)
def test_kafka_valid_rules(rules: str) -> None:
    assert isinstance(parse_principal_rules(rules), PrincipalMapper)


@pytest.mark.parametrize(
    "rules",
    [
        "default",
        "DEFAUL",
        "DEFAULT/L",
        "DEFAULT/U",
        "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
        "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
        "RULE:^CN=(.*?),.*$/$1/\nDEFAULT",  # JDK: refused (Java's "." stops at the newline)
        "RULE:abc/x/L garbage, DEFAULT",  # JDK: refused
    ],
)
def test_kafka_invalid_rules(rules: str) -> None:
    with pytest.raises(TlsConfigError) as caught:
        parse_principal_rules(rules)
    assert caught.value.setting == "principal_mapping_rules"


def test_kafka_mapper() -> None:
    mapper = parse_principal_rules(
        ", ".join(
            [
                "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
                "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
                "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
                "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
                "DEFAULT",
            ]
        )
    )
    assert mapper.name("CN=Duke,OU=ServiceUsers,O=Org,C=US") == "duke"
    assert mapper.name("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US") == "duke@sme"
    assert mapper.name("cn=duke,ou=sme,dc=mycp,dc=com") == "DUKE@SME"
    assert mapper.name("cN=duke,OU=JavaSoft,O=Sun Microsystems") == "DUKE"
    assert mapper.name("OU=JavaSoft,O=Sun Microsystems,C=US") == "OU=JavaSoft,O=Sun Microsystems,C=US"


@pytest.mark.parametrize(
    ("expected", "rules"),
    [
        ("[DEFAULT]", "DEFAULT"),
        ("[RULE:/]", "RULE://"),
        ("[RULE:/.*]", "RULE:/.*/"),
        ("[RULE:/.*/L]", "RULE:/.*/L"),
        ("[RULE:/, DEFAULT]", "RULE://,DEFAULT"),
        ("[RULE:/, DEFAULT]", "  RULE:// ,  DEFAULT  "),
        ("[RULE:   /     , DEFAULT]", "  RULE:   /     / ,  DEFAULT  "),
        ("[RULE:  /     /U, DEFAULT]", "  RULE:  /     /U   ,DEFAULT  "),
        ("[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]", "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  "),
        ("[RULE:/, DEFAULT]", ",,RULE://,,,DEFAULT,,"),
        ("[RULE: /   , DEFAULT]", ",  , RULE: /   /    ,,,   DEFAULT, ,   "),
        ("[RULE:   /  /U, DEFAULT]", "     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,"),
        ("[RULE:\\/\\\\\\(\\)\\n\\t/\\/\\/]", "RULE:\\/\\\\\\(\\)\\n\\t/\\/\\//"),
        ("[RULE:\\**\\/+/*/L, RULE:\\/*\\**/**]", "RULE:\\**\\/+/*/L,RULE:\\/*\\**/**/"),
        (
            "[RULE:,RULE:,/,RULE:,\\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, /DEFAULT, DEFAULT]",
            "RULE:,RULE:,/,RULE:,\\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
        ),
    ],
)
def test_kafka_rules_splitting(expected: str, rules: str) -> None:
    assert str(parse_principal_rules(rules)) == f"SslPrincipalMapper(rules = {expected})"


def test_kafka_comma_with_whitespace() -> None:
    mapper = parse_principal_rules("RULE:^CN=((\\\\, *|\\w)+)(,.*|$)/$1/,DEFAULT")
    assert mapper.name("CN=Tkac\\, Adam,OU=ITZ,DC=geodis,DC=cz") == "Tkac\\, Adam"


@pytest.mark.parametrize(
    ("rules", "dn", "expected"),
    [  # JDK results
        ("RULE:^CN=(.*?),.*$/$12/", "CN=alice,OU=eng,O=acme,C=US", "alice2"),  # $12 with one group: $1, then "2"
        ("RULE:^CN=(.*?),.*$/$0!/", "CN=alice,OU=eng", "CN=alice,OU=eng!"),
        ("RULE:^CN=(.*?),.*$/$05/", "CN=alice,OU=eng", "CN=alice,OU=eng5"),
        ("RULE:^CN=(.*?),.*$/\\$1/", "CN=alice,OU=eng", "$1"),
        ("RULE:^CN=(?<user>.*?),.*$/${user}@x/", "CN=alice,OU=eng", "alice@x"),
        ("RULE:(a??)/-/", "a", "-a-"),  # replaceAll after an empty match resumes one character later
        ("RULE:.*/X/", "abc", "XX"),
        ("RULE:(x*)(.*)/<$1|$2>/", "abc", "<|abc><|>"),
        ("RULE:b*/-/", "bb", "--"),
        ("RULE:a|(b)/[$1]/", "b", "[b]"),
        ("RULE:^CN=(.*?),OU=(.*?),.*$/$2 \\\\ $1/U", "CN=alice,OU=eng,O=acme", "ENG \\ ALICE"),
        ("RULE:(?i)^cn=([a-z]+).*$/$1/", "CN=Alice,O=x", "Alice"),
        ("RULE:^(\\w+)=.*$/$1/", "CN=x", "CN"),
    ],
)
def test_replacements_as_java(rules: str, dn: str, expected: str) -> None:
    assert parse_principal_rules(rules).name(dn) == expected


def test_ascii_classes_as_java() -> None:
    # Java's \w is ASCII: "Zoë" has no match, and the mapping fails rather than picking another name.
    with pytest.raises(NoMatchingRule, match="No rules apply to CN=Zoë"):
        parse_principal_rules("RULE:^CN=(\\w+)$/$1/").name("CN=Zoë")


@pytest.mark.parametrize(
    ("rules", "detail"),
    [  # Kafka accepts these, then throws for every certificate they match; here they fail at start
        ("", "no rules"),
        (",   , ,", "no rules"),
        ("RULE:^CN=.*$/$1/", "no group 1: the pattern has 0"),
        ("RULE:^CN=(.*?),.*$/$2$3/", "no group 3: the pattern has 1"),
        ("RULE:^CN=(?<user>.*?),.*$/${nope}/", "no group with name {nope}"),
        ("RULE:^CN=.*$/x$/", "group index is missing"),
        ("RULE:(.)/$x/", "illegal group reference $x"),
        ("RULE:(.)/${1x/", "missing trailing '}'"),
        ("RULE:^CN=(\\p{L}+).*$/$1/", "does not compile"),  # Java-only syntax
    ],
)
def test_rules_refused_when_parsed(rules: str, detail: str) -> None:
    with pytest.raises(TlsConfigError, match=r"^principal_mapping_rules: ") as caught:
        parse_principal_rules(rules)
    assert detail in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# Distinguished names as X500Principal.getName() writes them


A = x509.NameAttribute
RDN = x509.RelativeDistinguishedName

SUBJECTS: dict[str, tuple[x509.Name, str]] = {  # JDK results, on certificates with these subjects
    "alice": (
        name(
            (NameOID.COUNTRY_NAME, "US"),
            (NameOID.ORGANIZATION_NAME, "acme"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "eng"),
            (NameOID.COMMON_NAME, "alice"),
        ),
        "CN=alice,OU=eng,O=acme,C=US",
    ),
    "specials": (name((NameOID.COMMON_NAME, 'a,b+c"d\\e<f>g;h=i#j')), 'CN=a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i\\#j'),
    "spaces": (
        name((NameOID.COMMON_NAME, "#lead"), (NameOID.ORGANIZATIONAL_UNIT_NAME, " spaced  ")),
        "OU=\\ spaced\\ \\ ,CN=\\#lead",
    ),
    "only spaces": (name((NameOID.COMMON_NAME, "   ")), "CN=\\ \\ \\ "),
    "carriage returns": (name((NameOID.COMMON_NAME, "\rx\r")), "CN=\\\rx\\\r"),
    "nul": (name((NameOID.COMMON_NAME, "a\x00b")), "CN=a\\00b"),
    "unicode": (
        name(
            (NameOID.COMMON_NAME, "Zoë 日本 😀"),
            (NameOID.LOCALITY_NAME, "Zürich"),
            (NameOID.STATE_OR_PROVINCE_NAME, "ZH"),
            (NameOID.STREET_ADDRESS, "Main St 1"),
        ),
        "STREET=Main St 1,ST=ZH,L=Zürich,CN=Zoë 日本 😀",
    ),
    "email": (
        name((NameOID.EMAIL_ADDRESS, "alice@example.com"), (NameOID.COMMON_NAME, "alice")),
        "CN=alice,1.2.840.113549.1.9.1=#1611616c696365406578616d706c652e636f6d",
    ),
    "dc and uid": (
        name(
            (NameOID.DOMAIN_COMPONENT, "com"),
            (NameOID.DOMAIN_COMPONENT, "example"),
            (NameOID.USER_ID, "a_1"),
            (NameOID.COMMON_NAME, "x@y*z_"),
        ),
        "CN=x@y*z_,UID=a_1,DC=example,DC=com",
    ),
    "multi-valued": (
        x509.Name(
            [
                RDN(
                    [
                        A(NameOID.COMMON_NAME, "bob"),
                        A(NameOID.USER_ID, "b1"),
                        A(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),
                    ]
                ),
                RDN([A(NameOID.ORGANIZATION_NAME, "acme")]),
            ]
        ),
        "O=acme,CN=bob+OU=ops+UID=b1",
    ),
    "no keyword": (
        name(
            (NameOID.SERIAL_NUMBER, "1234"),
            (NameOID.TITLE, "boss"),
            (NameOID.GIVEN_NAME, "Al"),
            (NameOID.COMMON_NAME, "al"),
        ),
        "CN=al,2.5.4.42=#0c02416c,2.5.4.12=#0c04626f7373,2.5.4.5=#130431323334",
    ),
    "bmp string": (x509.Name([A(NameOID.COMMON_NAME, "bmp", _type=_ASN1Type.BMPString)]), "CN=\\00b\\00m\\00p"),
    "string types": (
        x509.Name(
            [
                A(NameOID.COMMON_NAME, "vis", _type=_ASN1Type.VisibleString),
                A(NameOID.ORGANIZATION_NAME, "t61", _type=_ASN1Type.T61String),
                A(NameOID.ORGANIZATIONAL_UNIT_NAME, "ia5", _type=_ASN1Type.IA5String),
            ]
        ),
        "OU=ia5,O=t61,CN=#1a03766973",
    ),
    "non-string types": (
        x509.Name(
            [
                A(NameOID.COMMON_NAME, "123", _type=_ASN1Type.NumericString),
                A(NameOID.ORGANIZATION_NAME, "uni", _type=_ASN1Type.UniversalString),
            ]
        ),
        "O=#1c0c000000750000006e00000069,CN=#1203313233",
    ),
}


@pytest.mark.parametrize("subject", SUBJECTS)
def test_distinguished_name_as_java(pki: Pki, tmp_path: Path, subject: str) -> None:
    subject_name, expected = SUBJECTS[subject]
    cert = issue(tmp_path, "c", pki.ca, subject_name)
    assert distinguished_name(cert.der) == expected


def test_principal_from_certificate(pki: Pki) -> None:
    mapper = parse_principal_rules("RULE:^CN=([^,]+),OU=eng,.*$/$1/U")
    assert principal_from_certificate(pki.client.der, mapper) == "User:ALICE"
    assert principal_from_certificate(pki.client.der, parse_principal_rules("DEFAULT")) == (
        "User:CN=alice,OU=eng,O=acme,C=US"
    )
    assert principal_from_certificate(None, mapper) == ANONYMOUS == "User:ANONYMOUS"
    assert principal_from_certificate({}, mapper) == ANONYMOUS  # getpeercert() of a connection without one
    with pytest.raises(NoMatchingRule):
        principal_from_certificate(pki.server.der, mapper)
    with pytest.raises(PeerCertificateError):
        principal_from_certificate(b"\x30\x03\x02\x01\x00", mapper)
    with pytest.raises(PeerCertificateError):
        principal_from_certificate(pki.client.der[:100], mapper)


def test_the_getpeercert_dictionary_gives_the_same_name(pki: Pki) -> None:
    server_end, _ = bio_connect(server_context(required(pki)), client_ctx(pki, pki.client))
    peer = server_end.getpeercert()
    assert peer is not None and peer.get("subject")
    assert distinguished_name(peer) == distinguished_name(pki.client.der) == "CN=alice,OU=eng,O=acme,C=US"
    assert principal_from_certificate(peer, parse_principal_rules("DEFAULT")) == "User:CN=alice,OU=eng,O=acme,C=US"
    with_email = {"subject": ((("emailAddress", "a@b"),), (("commonName", "a"),))}
    with pytest.raises(PeerCertificateError, match="binary_form=True"):
        distinguished_name(with_email)


# ---------------------------------------------------------------------------------------------------------------
# Reloading, without sockets: handshakes over memory BIOs, and an injected clock


def bio_connect(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A complete handshake in memory: the server's and the client's ends. Raises ssl.SSLError."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"s": False, "c": False}
    for _ in range(10):  # TLS 1.3 needs 2 round trips; 10 is plenty
        for key, obj in (("c", c), ("s", s)):
            if not done[key]:
                with suppress(ssl.SSLWantReadError):
                    obj.do_handshake()
                    done[key] = True
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), done
    with suppress(ssl.SSLWantReadError):  # TLS 1.3: the server's verdict on the client certificate arrives now
        c.read(1)
    return s, c


def bio_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> x509.Certificate:
    """The certificate the server presents in a handshake in memory. Raises ssl.SSLError."""
    der = bio_connect(server, client)[1].getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def replace_files(source: Issued, cert_file: Path, key_file: Path) -> None:
    """As an operator or cert-manager would: new files renamed over the old ones (new inodes)."""
    for source_file, target in ((source.cert_file, cert_file), (source.key_file, key_file)):
        shutil.copyfile(source_file, target.with_name(target.name + ".new"))
        os.replace(target.with_name(target.name + ".new"), target)


@pytest.fixture
def live(pki: Pki, tmp_path: Path) -> TlsSettings:
    """Settings whose files a test may replace."""
    for f in (pki.server.cert_file, pki.server.key_file, pki.ca.cert_file):
        shutil.copyfile(f, tmp_path / f.name)
    return TlsSettings(
        cert_file=tmp_path / pki.server.cert_file.name,
        key_file=tmp_path / pki.server.key_file.name,
        ca_file=tmp_path / pki.ca.cert_file.name,
        client_auth=ClientAuth.REQUESTED,
    )


def test_reload_waits_for_the_interval_then_serves_the_new_files(pki: Pki, live: TlsSettings, tmp_path: Path) -> None:
    reloading = ReloadingContext(live, now_ms=0, check_interval_ms=1000)
    assert reloading.maybe_reload(1000) is None  # nothing changed
    assert bio_handshake(reloading.context, client_ctx(pki)).serial_number == pki.server.cert.serial_number
    rotated = server_cert(tmp_path, "rotated", pki.ca, "rotated")
    assert live.key_file is not None
    replace_files(rotated, live.cert_file, live.key_file)
    assert reloading.maybe_reload(1999) is None  # not yet time to look
    assert reloading.maybe_reload(2000) == Reloaded(("cert_file", "key_file"), 1)
    assert reloading.next_check_ms == 3000
    assert reloading.active is not reloading.context  # asyncio keeps the same object; handshakes move off it
    assert bio_handshake(reloading.context, client_ctx(pki)).serial_number == rotated.cert.serial_number
    assert reloading.maybe_reload(3000) is None


def test_a_broken_reload_keeps_the_old_context_and_is_reported_once(
    pki: Pki, live: TlsSettings, tmp_path: Path
) -> None:
    assert live.key_file is not None
    reloading = ReloadingContext(live, now_ms=0, check_interval_ms=10)
    before = reloading.active
    # Half of a non-atomic update: the new certificate is there, its key not yet.
    rotated = server_cert(tmp_path, "rotated", pki.ca, "rotated")
    shutil.copyfile(rotated.cert_file, live.cert_file)
    failed = reloading.maybe_reload(10)
    assert isinstance(failed, ReloadFailed) and "key_file: " in failed.error and "does not match" in failed.error
    assert reloading.maybe_reload(20) is None  # the same broken files: not reported again
    assert reloading.active is before
    assert bio_handshake(reloading.context, client_ctx(pki)).serial_number == pki.server.cert.serial_number
    live.key_file.unlink()
    failed = reloading.maybe_reload(30)
    assert isinstance(failed, ReloadFailed) and "no such file" in failed.error.lower()
    assert reloading.maybe_reload(40) is None
    shutil.copyfile(rotated.key_file, live.key_file)  # the update completes
    assert reloading.maybe_reload(50) == Reloaded(("cert_file", "key_file"), 1)
    assert bio_handshake(reloading.context, client_ctx(pki)).serial_number == rotated.cert.serial_number
    live.cert_file.write_text("garbage")
    failed = reloading.maybe_reload(60)
    assert isinstance(failed, ReloadFailed) and failed.error.startswith("cert_file: ")
    assert bio_handshake(reloading.context, client_ctx(pki)).serial_number == rotated.cert.serial_number


def test_a_failed_reload_is_retried_without_a_file_change(
    pki: Pki, live: TlsSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert live.key_file is not None
    reloading = ReloadingContext(live, now_ms=0, check_interval_ms=10)
    rotated = server_cert(tmp_path, "rotated", pki.ca, "rotated")
    replace_files(rotated, live.cert_file, live.key_file)
    builds = []

    def out_of_descriptors(settings: TlsSettings) -> ssl.SSLContext:
        builds.append(settings)
        raise TlsConfigError("cert_file", f"{settings.cert_file}: Too many open files")

    monkeypatch.setattr(tls, "server_context", out_of_descriptors)
    assert isinstance(reloading.maybe_reload(10), ReloadFailed)
    assert reloading.maybe_reload(20) is None  # tried again, not reported again
    assert len(builds) == 2
    monkeypatch.undo()
    assert reloading.maybe_reload(30) == Reloaded(("cert_file", "key_file"), 1)
    assert bio_handshake(reloading.context, client_ctx(pki)).serial_number == rotated.cert.serial_number


def test_why_reloads_build_new_contexts(pki: Pki, tmp_path: Path) -> None:
    """The two facts behind ReloadingContext's design (if a Python or OpenSSL release changes them, revisit it)."""
    # A CA can be added to a live context's trust store, never removed: a reload in place could not revoke one.
    ctx = server_context(TlsSettings(pki.server.cert_file, pki.server.key_file, ca_file=pki.ca.cert_file))
    ctx.load_verify_locations(pki.other_ca.cert_file)
    assert ctx.cert_store_stats()["x509_ca"] == 2
    # A failed load_cert_chain on a live context leaves it without a usable key: no handshake succeeds after it.
    ctx = server_context(TlsSettings(pki.server.cert_file, pki.server.key_file))
    bio_handshake(ctx, client_ctx(pki))
    other = server_cert(tmp_path, "other", pki.ca)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(other.cert_file, pki.server.key_file)
    with pytest.raises(ssl.SSLError):
        bio_handshake(ctx, client_ctx(pki))


# ---------------------------------------------------------------------------------------------------------------
# Listeners: asyncio.start_server on 127.0.0.1 with the contexts, on asyncio's loop and on uvloop (the shards')

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(main(), 60))


class Listener:
    """A TLS listener that answers each connection with its principal, then echoes lines."""

    def __init__(self, ctx: ssl.SSLContext, mapper: PrincipalMapper) -> None:
        self.ctx = ctx
        self.mapper = mapper
        self.handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            try:
                principal = principal_from_certificate(der, self.mapper)
            except PrincipalError:
                return
            writer.write(principal.encode() + b"\n")
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)


@asynccontextmanager
async def listening(
    ctx: ssl.SSLContext, rules: str = "DEFAULT", handshake_timeout_s: float = TLS_HANDSHAKE_TIMEOUT_S
) -> AsyncIterator[Listener]:
    listener = Listener(ctx, parse_principal_rules(rules))
    server = await asyncio.start_server(
        listener.handle, "127.0.0.1", 0, ssl=ctx, ssl_handshake_timeout=handshake_timeout_s
    )
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        if listener.handlers:  # each ends when its client closes; a test that fails may leave some behind
            _, stragglers = await asyncio.wait(set(listener.handlers), timeout=WAIT_S)
            for task in stragglers:
                task.cancel()
        await asyncio.wait_for(server.wait_closed(), WAIT_S)


async def principal_of(port: int, ctx: ssl.SSLContext, hostname: str = "localhost") -> str | None:
    """The principal the listener gave this client, or None if the listener refused it (in or after the handshake)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=hostname), WAIT_S
        )
    except (ssl.SSLError, ConnectionError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), WAIT_S)
    except (ssl.SSLError, ConnectionError):
        # TLS 1.3: the client's handshake ends before the server has checked its certificate; the alert comes now.
        return None
    finally:
        writer.close()
    return line.decode().rstrip("\n") or None


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: bytes) -> bytes:
    writer.write(text + b"\n")
    return await asyncio.wait_for(reader.readline(), WAIT_S)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (read() returns at EOF); fails after WAIT_S."""
    with suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), WAIT_S)
    return True


def client_hello(pki: Pki) -> bytes:
    """The first flight of a real TLS client, to send by hand."""
    out = ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # TLSv1 and TLSv1_1
@pytest.mark.parametrize("loop", LOOPS)
def test_mutual_tls_required(pki: Pki, loop: str) -> None:
    async def main() -> None:
        ctx = server_context(required(pki))
        async with listening(ctx, "RULE:^CN=([^,]+),OU=eng,.*$/$1/L, DEFAULT") as listener:
            port = listener.port
            assert await principal_of(port, client_ctx(pki, pki.client)) == "User:alice"
            assert await principal_of(port, client_ctx(pki)) is None  # no certificate
            assert await principal_of(port, client_ctx(pki, pki.expired_client)) is None
            assert await principal_of(port, client_ctx(pki, pki.foreign_client)) is None  # another CA signed it
            tls12 = client_ctx(pki, pki.client)
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            assert await principal_of(port, tls12) == "User:alice"
            assert await principal_of(port, tls11_client(pki)) is None
        # A mapping that matches nothing refuses the connection (Kafka fails the authentication).
        async with listening(ctx, "RULE:^CN=nobody.*$/x/") as listener:
            assert await principal_of(listener.port, client_ctx(pki, pki.client)) is None
        # The TLS 1.1 client above was refused by the listener, not by its own OpenSSL: a listener that allows
        # TLS 1.1 gets a handshake from it.
        lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        lax.load_cert_chain(pki.server.cert_file, pki.server.key_file)
        lax.minimum_version = ssl.TLSVersion.TLSv1
        lax.set_ciphers("DEFAULT:@SECLEVEL=0")
        async with listening(lax) as listener:
            assert await principal_of(listener.port, tls11_client(pki)) == ANONYMOUS

    run(loop, main)


def tls11_client(pki: Pki) -> ssl.SSLContext:
    ctx = client_ctx(pki, pki.client)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 at its default security level
    return ctx


@pytest.mark.parametrize("loop", LOOPS)
def test_client_certificate_requested(pki: Pki, loop: str) -> None:
    async def main() -> None:
        settings = TlsSettings(pki.server.cert_file, pki.server.key_file, ca_file=pki.ca.cert_file)
        requested = server_context(dataclasses.replace(settings, client_auth=ClientAuth.REQUESTED))
        async with listening(requested) as listener:
            assert await principal_of(listener.port, client_ctx(pki)) == ANONYMOUS
            assert await principal_of(listener.port, client_ctx(pki, pki.client)) == "User:CN=alice,OU=eng,O=acme,C=US"
            assert await principal_of(listener.port, client_ctx(pki, pki.foreign_client)) is None
        async with listening(server_context(settings)) as listener:  # client_auth=none: never asked for
            assert await principal_of(listener.port, client_ctx(pki, pki.client)) == ANONYMOUS

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_garbage_and_silence_close_only_their_own_connection(pki: Pki, loop: str) -> None:
    async def main() -> None:
        ctx = server_context(required(pki))
        async with listening(ctx, handshake_timeout_s=SHORT_HANDSHAKE_TIMEOUT_S) as listener:
            port = listener.port
            established = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx(pki, pki.client), server_hostname="localhost"
                ),
                WAIT_S,
            )
            assert await asyncio.wait_for(established[0].readline(), WAIT_S) == b"User:CN=alice,OU=eng,O=acme,C=US\n"
            # Garbage instead of a ClientHello (a plaintext Kafka client on a TLS port sends a request like this).
            r1, w1 = await asyncio.open_connection("127.0.0.1", port)
            w1.write(b"\x00\x00\x00\x15\x00\x12\x00\x03\x00\x00\x00\x01\x00\x07rdkafka" * 20)
            # A real ClientHello, then garbage in the middle of the handshake.
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(client_hello(pki))
            await asyncio.wait_for(r2.read(5), WAIT_S)  # the ServerHello has started
            w2.write(os.urandom(4096))
            # A client that connects and says nothing: the handshake timeout closes it.
            r3, w3 = await asyncio.open_connection("127.0.0.1", port)
            # Half a ClientHello, then nothing.
            r4, w4 = await asyncio.open_connection("127.0.0.1", port)
            w4.write(client_hello(pki)[:40])
            for reader in (r1, r2, r3, r4):
                assert await closed_by_server(reader)
            for writer in (w1, w2, w3, w4):
                writer.close()
            # The listener and the connection it already had are unaffected.
            assert await echo(*established, b"still here") == b"still here\n"
            assert await principal_of(port, client_ctx(pki, pki.client)) == "User:CN=alice,OU=eng,O=acme,C=US"
            established[1].close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_reload_under_a_running_listener(pki: Pki, live: TlsSettings, tmp_path: Path, loop: str) -> None:
    assert live.key_file is not None and live.ca_file is not None
    key_file, ca_file = live.key_file, live.ca_file

    async def main() -> None:
        reloading = ReloadingContext(live, now_ms=0, check_interval_ms=1000)
        async with listening(reloading.context) as listener:
            port = listener.port
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx(pki, pki.client), server_hostname="localhost"
                ),
                WAIT_S,
            )
            await asyncio.wait_for(reader.readline(), WAIT_S)
            served = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert x509.load_der_x509_certificate(served).serial_number == pki.server.cert.serial_number

            rotated = server_cert(tmp_path, "rotated", pki.ca, "rotated")
            replace_files(rotated, live.cert_file, key_file)
            assert reloading.maybe_reload(1000) == Reloaded(("cert_file", "key_file"), 1)
            r2, w2 = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_ctx(pki, pki.client), server_hostname="localhost"
                ),
                WAIT_S,
            )
            assert await asyncio.wait_for(r2.readline(), WAIT_S) == b"User:CN=alice,OU=eng,O=acme,C=US\n"
            served = w2.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert x509.load_der_x509_certificate(served).serial_number == rotated.cert.serial_number
            w2.close()
            assert await echo(reader, writer, b"old connection") == b"old connection\n"

            # The CA is replaced: certificates of the old one are refused, the new one's accepted.
            shutil.copyfile(pki.other_ca.cert_file, ca_file.with_name("ca.new"))
            os.replace(ca_file.with_name("ca.new"), ca_file)
            assert reloading.maybe_reload(2000) == Reloaded(("ca_file",), 2)
            assert await principal_of(port, client_ctx(pki, pki.client)) is None
            assert await principal_of(port, client_ctx(pki, pki.foreign_client)) == "User:CN=mallory"
            assert await echo(reader, writer, b"still") == b"still\n"
            writer.close()

    run(loop, main)


def test_client_context(pki: Pki) -> None:
    async def main() -> None:
        async with listening(server_context(required(pki)), "RULE:^CN=([^,]+).*$/$1/") as listener:
            port = listener.port
            ctx = client_context(pki.ca.cert_file, cert_file=pki.client.cert_file, key_file=pki.client.key_file)
            assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
            assert await principal_of(port, ctx) == "User:alice"
            assert await principal_of(port, ctx, hostname="127.0.0.1") == "User:alice"  # the IP SAN
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="broker-7.example")
            loose = client_context(
                pki.ca.cert_file, cert_file=pki.client.cert_file, key_file=pki.client.key_file, check_hostname=False
            )
            assert await principal_of(port, loose, hostname="broker-7.example") == "User:alice"
            system_cas = client_context(None, cert_file=pki.client.cert_file, key_file=pki.client.key_file)
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection("127.0.0.1", port, ssl=system_cas, server_hostname="localhost")
            assert await principal_of(port, client_context(pki.ca.cert_file)) is None  # no client certificate
        with pytest.raises(TlsConfigError, match=r"^key_file: set without cert_file"):
            client_context(pki.ca.cert_file, key_file=pki.client.key_file)

    run("asyncio", main)


def test_handshake_timeout_is_bounded() -> None:
    assert 0 < TLS_HANDSHAKE_TIMEOUT_S <= 60  # asyncio's own default is 60 s; a listener should give up sooner
