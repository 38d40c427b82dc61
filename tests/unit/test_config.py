"""The typed config: defaults, precedence (file < env < flags), bounds and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rafka_shards.config import MIB, BrokerConfig, ConfigError, Durability, load_config


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
