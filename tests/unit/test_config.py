"""The typed config: defaults, precedence (file < env < flags), bounds and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rafka_shards.config import MIB, BrokerConfig, ConfigError, Durability, load_config, usable_cpus


def test_defaults_need_no_configuration() -> None:
    config = load_config({}, environ={})
    assert config == BrokerConfig()
    assert str(config.listen_endpoint) == "127.0.0.1:9092"
    assert config.advertise_endpoint == config.listen_endpoint
    assert config.socket_request_max_bytes == 100 * MIB
    assert config.durability is Durability.FSYNC


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"listen": "127.0.0.1:1000", "default-partitions": 3, "durability": "flush"}')
    env = {"RAFKA_LISTEN": "127.0.0.1:2000", "RAFKA_BROKER_ID": "7"}
    config = load_config({"listen": "127.0.0.1:3000"}, environ=env, config_file=f)
    assert config.listen == "127.0.0.1:3000"
    assert config.broker_id == 7
    assert config.default_partitions == 3
    assert config.durability is Durability.FLUSH
    assert load_config({}, environ=env, config_file=f).listen == "127.0.0.1:2000"


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"default_partitions": "0"}, {}, "default_partitions .*below the minimum 1"),
        ({"socket_request_max_bytes": "abc"}, {}, "socket_request_max_bytes .*integer"),
        ({}, {"RAFKA_AUTO_CREATE_TOPICS": "maybe"}, "auto_create_topics .*RAFKA_AUTO_CREATE_TOPICS.*true/false"),
        ({"listen": "nope"}, {}, "listen: expected HOST:PORT"),
        ({"listen": "127.0.0.1:70000"}, {}, "outside 0..65535"),
        ({"listen": "0.0.0.0:9092"}, {}, "set --advertise"),
        ({"durability": "sometimes"}, {}, "durability"),
        ({"shards": "0"}, {}, "shards: expected auto or a number of shards in 1..256"),
        ({"shards": "300"}, {}, "shards: expected auto or a number"),
        ({"shards": "4", "listen": "127.0.0.1:65533"}, {}, "4 shards need ports 65533..65536, beyond 65535"),
    ],
)
def test_bad_values_name_the_setting(flags: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(flags, environ=env)


def test_bad_config_file(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config({}, environ={}, config_file=f)
    f.write_text('{"no_such_setting": 1}')
    with pytest.raises(ConfigError, match="unknown setting 'no_such_setting'"):
        load_config({}, environ={}, config_file=f)
    with pytest.raises(ConfigError, match=r"missing\.json"):
        load_config({}, environ={}, config_file=tmp_path / "missing.json")


def test_shard_count() -> None:
    assert load_config({"shards": "3"}, environ={}).shard_count == 3
    assert load_config({}, environ={}).shard_count == usable_cpus() >= 1  # auto


def test_usable_cpus_respects_a_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: rounds up to 2
    assert usable_cpus(cpu_max) == min(2, usable_cpus(tmp_path / "absent"))
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == usable_cpus(tmp_path / "absent")


def test_named_listeners_follow_kafkas_syntax_and_the_inter_broker_one_is_listen() -> None:
    config = load_config(
        {
            "listeners": "CLIENT://127.0.0.1:9192,INTERNAL://127.0.0.1:9092,SECURE://:9292",
            "advertised_listeners": "CLIENT://kafka.example:19192,SECURE://kafka.example:9292",
            "listener_security_protocol_map": "INTERNAL:PLAINTEXT,CLIENT:PLAINTEXT,SECURE:SSL",
            "inter_broker_listener_name": "INTERNAL",
            "shards": "2",
        },
        environ={},
    )
    specs = config.listener_specs()
    assert [(li.name, li.protocol.value) for li in specs] == [
        ("INTERNAL", "PLAINTEXT"),
        ("CLIENT", "PLAINTEXT"),
        ("SECURE", "SSL"),
    ]
    assert config.listen == "127.0.0.1:9092" and config.advertise == "127.0.0.1:9092"
    assert str(specs[2].bind) == "0.0.0.0:9292" and str(specs[1].advertised) == "kafka.example:19192"
    shard1 = specs[1].for_shard(1, 9193)
    assert str(shard1.bind) == "127.0.0.1:9193" and str(shard1.advertised) == "kafka.example:19193"
    # Without listeners: one PLAINTEXT listener on --listen.
    (only,) = load_config({"listen": "127.0.0.1:7000"}, environ={}).listener_specs()
    assert (only.name, only.protocol.value, str(only.bind)) == ("PLAINTEXT", "PLAINTEXT", "127.0.0.1:7000")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"listeners": "internal://127.0.0.1:1"}, "NAME://HOST:PORT with NAME in capitals"),
        ({"listeners": "A://127.0.0.1:1,A://127.0.0.1:2"}, "A is named twice"),
        ({"listeners": "INTERNAL://127.0.0.1:9092"}, "no security protocol for listener INTERNAL"),
        ({"listeners": "PLAINTEXT://0.0.0.0:9092"}, "give advertised_listeners an address"),
        ({"listeners": "SASL_SSL://127.0.0.1:9092"}, "inter_broker_sasl_username: required, the inter-broker listener"),
        (
            {"listeners": "SASL_PLAINTEXT://127.0.0.1:9092", "inter_broker_sasl_username": "broker"},
            "inter_broker_sasl_password: required",
        ),
        (
            {
                "listeners": "SASL_PLAINTEXT://127.0.0.1:9092",
                "inter_broker_sasl_username": "broker",
                "inter_broker_sasl_password": "pw",
                "inter_broker_sasl_mechanism": "PLAIN",
                "sasl_enabled_mechanisms": "SCRAM-SHA-512",
            },
            "inter_broker_sasl_mechanism: PLAIN is not in sasl_enabled_mechanisms",
        ),
        (
            {
                "listeners": "SASL_PLAINTEXT://127.0.0.1:9092",
                "inter_broker_sasl_username": "broker",
                "inter_broker_sasl_password": "pw",
                "inter_broker_sasl_mechanism": "GSSAPI",
            },
            "inter_broker_sasl_mechanism: GSSAPI not supported",
        ),
        (
            {
                "listeners": "SASL_SSL://127.0.0.1:9092",
                "inter_broker_sasl_username": "broker",
                "inter_broker_sasl_password": "pw",
                "ssl_cert_file": "/x.pem",
            },
            "ssl_ca_file: required, the inter-broker listener uses SASL_SSL",
        ),
        (
            {
                "listeners": "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9192",
                "sasl_enabled_mechanisms": "GSSAPI",
                "shards": "1",
            },
            "sasl_enabled_mechanisms: GSSAPI not supported",
        ),
        (
            {
                "listeners": "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9192",
                "sasl_enabled_mechanisms": ",",
                "shards": "1",
            },
            "sasl_enabled_mechanisms: no mechanism given",
        ),
        ({"connections_max_reauth_ms": "-1"}, "connections_max_reauth_ms .* below the minimum 0"),
        ({"listeners": "SSL://127.0.0.1:9092"}, "ssl_ca_file: required, the inter-broker listener uses SSL"),
        ({"listeners": "PLAINTEXT://127.0.0.1:9092", "inter_broker_listener_name": "X"}, "X is not in listeners"),
        ({"listeners": "PLAINTEXT://127.0.0.1:9092", "advertised_listeners": "SSL://h:1"}, "SSL not in listeners"),
        (
            {"listeners": "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093", "shards": "2"},
            "SSL and PLAINTEXT both need port 9093",
        ),
        ({"listeners": "PLAINTEXT://127.0.0.1:9092", "listener_security_protocol_map": "PLAINTEXT:TLS"}, "PROTOCOL"),
        ({"advertised_listeners": "PLAINTEXT://h:1"}, "need listeners to be set"),
    ],
)
def test_bad_listener_settings_are_refused_naming_the_setting(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(flags, environ={})


def test_a_secured_inter_broker_listener_is_accepted_with_what_its_clients_need() -> None:
    flags = {
        "listeners": "INTERNAL://127.0.0.1:9092,CLIENT://127.0.0.1:9192",
        "listener_security_protocol_map": "INTERNAL:SASL_SSL,CLIENT:SASL_SSL",
        "inter_broker_sasl_username": "broker",
        "inter_broker_sasl_password": "pw",
        "inter_broker_sasl_mechanism": "scram-sha-256",
        "sasl_enabled_mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
        "ssl_ca_file": "/ca.pem",
        "shards": "1",
    }
    config = load_config(flags, environ={})
    inter = config.listener_specs()[0]
    assert (inter.name, inter.protocol.value) == ("INTERNAL", "SASL_SSL")
    assert "inter_broker_sasl_password" not in repr(config)  # a traceback or a log line never shows it
