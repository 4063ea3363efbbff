"""Settings: defaults, env, TOML, flags, and precise errors for bad values."""

from __future__ import annotations

import pytest

from sbc.config import ConfigError, ListenSpec, load_settings, parse_listen, parse_port_range


def test_defaults_are_valid() -> None:
    s = load_settings()
    assert ListenSpec("udp", "0.0.0.0", 5060) in s.listeners
    assert s.db.startswith("sqlite")


def test_parse_listen_forms() -> None:
    assert parse_listen("udp:127.0.0.2:5070") == [ListenSpec("udp", "127.0.0.2", 5070)]
    assert parse_listen("127.0.0.1") == [
        ListenSpec("udp", "127.0.0.1", 5060),
        ListenSpec("tcp", "127.0.0.1", 5060),
    ]
    assert parse_listen("tcp:[::1]:5080") == [ListenSpec("tcp", "::1", 5080)]
    for bad in ("udp:300.1.1.1:5060", "udp:127.0.0.1:99999", "tcp:[::1", "udp:127.0.0.1:abc"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_port_range() -> None:
    assert parse_port_range("20000-30000") == (20000, 30000)
    for bad in ("30000-20000", "10-20", "abc", "20000"):
        with pytest.raises(ValueError):
            parse_port_range(bad)


def test_env_overrides_and_list_splitting(monkeypatch) -> None:
    monkeypatch.setenv("SBC_SIP_LISTEN", "udp:127.0.0.1:5070 tcp:127.0.0.1:5071")
    monkeypatch.setenv("SBC_T1", "0.25")
    s = load_settings()
    assert s.listeners == [ListenSpec("udp", "127.0.0.1", 5070), ListenSpec("tcp", "127.0.0.1", 5071)]
    assert s.t1 == 0.25


def test_toml_file_and_flag_precedence(tmp_path, monkeypatch) -> None:
    path = tmp_path / "sbc.toml"
    path.write_text('sip_listen = ["udp:127.0.0.5:5099"]\nt2 = 8.0\nrtp_ports = "30000-31000"\n')
    s = load_settings(toml_file=str(path))
    assert s.listeners == [ListenSpec("udp", "127.0.0.5", 5099)] and s.t2 == 8.0
    s = load_settings({"rtp_ports": "40000-41000"}, toml_file=str(path))
    assert s.rtp_ports == "40000-41000"


def test_bad_values_name_the_setting(monkeypatch) -> None:
    monkeypatch.setenv("SBC_T1", "-1")
    with pytest.raises(ConfigError) as e:
        load_settings({"rtp_ports": "5-4"})
    text = str(e.value)
    assert "t1" in text and "rtp_ports" in text


def test_unknown_toml_key_is_refused(tmp_path) -> None:
    path = tmp_path / "sbc.toml"
    path.write_text("no_such_knob = 1\n")
    with pytest.raises(ConfigError, match="no_such_knob"):
        load_settings(toml_file=str(path))


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(toml_file="/nonexistent/sbc.toml")
