"""Config precedence and validation: CLI > environment > file > defaults."""

import pytest

from edgepose.core import config
from edgepose.core.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "edgepose.toml"
    p.write_text(text)
    return str(p)


def test_defaults():
    cfg = config.load(environ={})
    assert cfg.model.name == "cpm" and cfg.runtime.xnnpack is True and cfg.output.sink == "stdout"
    assert cfg.mqtt.qos == 0 and cfg.mqtt.prefix == "edgepose"


def test_precedence_cli_over_env_over_file(tmp_path):
    path = write(tmp_path, '[model]\nname = "hourglass"\n[runtime]\nthreads = 2\nxnnpack = false\n'
                           '[mqtt]\nport = 1884\n[camera]\nsource = 0\n')
    env = {"EDGEPOSE_RUNTIME_THREADS": "3", "EDGEPOSE_MQTT_HOST": "broker.lan"}
    cfg = config.load(path, {"runtime": {"threads": 1}}, environ=env)
    assert cfg.model.name == "hourglass"           # file
    assert cfg.runtime.xnnpack is False             # file
    assert cfg.runtime.threads == 1                 # CLI beats env and file
    assert cfg.mqtt.host == "broker.lan"            # env
    assert cfg.mqtt.port == 1884                    # file
    assert cfg.camera.source == "0"                 # integer camera index accepted as text
    assert cfg.path == path


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, '[output]\nsink = "none"\n')
    assert config.load(environ={"EDGEPOSE_CONFIG": path}).output.sink == "none"


@pytest.mark.parametrize("text,needle", [
    ('[model]\nnam = "cpm"\n', "unknown config key model.nam; allowed keys in [model]: name, dir"),
    ('[modle]\nname = "cpm"\n', "unknown config section [modle]"),
    ('[mqtt]\nqos = 2\n', "bad value 2 for mqtt.qos: expected one of 0, 1"),
    ('[runtime]\nthreads = "two"\n', "runtime.threads: expected an integer"),
    ('[runtime]\nxnnpack = "yes"\n', "runtime.xnnpack: expected true or false"),
    ('[output]\nsink = "kafka"\n', "expected one of 'stdout', 'mqtt', 'none'"),
    ('[mqtt]\nport = 70000\n', "mqtt.port: expected an integer from 1 to 65535"),
    ('[model]\nname = \n', "is not valid TOML"),
    ('[tracking]\nmargin = nan\n', "bad value nan for tracking.margin"),
    ('[mqtt]\nstatus_interval = inf\n', "bad value inf for mqtt.status_interval"),
    ('[mqtt]\nkeepalive = 70000\n', "mqtt.keepalive: expected an integer from 5 to 65535"),
])
def test_bad_file_names_the_key_and_allowed_values(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text), environ={})
    assert needle in str(e.value)
    assert e.value.exit_code == 78


def test_environment_values_are_parsed_and_checked():
    cfg = config.load(environ={"EDGEPOSE_RUNTIME_XNNPACK": "off", "EDGEPOSE_MQTT_QOS": "1",
                               "EDGEPOSE_MODEL_MIRROR": "/srv/models"})
    assert cfg.runtime.xnnpack is False and cfg.mqtt.qos == 1 and cfg.model.mirror == "/srv/models"
    with pytest.raises(ConfigError, match="EDGEPOSE_MQTT_QOS|mqtt.qos"):
        config.load(environ={"EDGEPOSE_MQTT_QOS": "5"})
    for text in ("nan", "inf", "-inf", "1e400"):  # nan passes every bound check, inf every minimum
        with pytest.raises(ConfigError, match="mqtt.close_timeout"):
            config.load(environ={"EDGEPOSE_MQTT_CLOSE_TIMEOUT": text})
    with pytest.raises(ConfigError, match="unknown environment variable EDGEPOSE_MQTT_HOSTNAME: "
                                          r"\[mqtt\] has no key 'hostname'"):
        config.load(environ={"EDGEPOSE_MQTT_HOSTNAME": "broker"})
    # EDGEPOSE_* variables that name no section are not config keys
    assert config.load(environ={"EDGEPOSE_SHARED": "/srv/shared"}).camera.source == "0"


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("/nonexistent/edgepose.toml", environ={})


def test_reference_lists_every_key():
    ref = config.reference_markdown()
    for section in config.sections():
        assert f"### [{section.name}]" in ref
    assert "`score_threshold`" in ref and "`queue_size`" in ref


@pytest.mark.parametrize("text,expected", [
    ("broker.lan", ("broker.lan", None)), ("broker.lan:1884", ("broker.lan", 1884)),
    ("10.0.0.5:1", ("10.0.0.5", 1)), ("::1", ("::1", None)), ("fd00::5", ("fd00::5", None)),
    ("[::1]", ("::1", None)), ("[fd00::5]:8883", ("fd00::5", 8883)), (" host:80 ", ("host", 80))])
def test_split_host_port(text, expected):
    assert config.split_host_port(text) == expected
    host, port = expected
    assert config.split_host_port(config.join_host_port(host, port or 1883)) == (host, port or 1883)


@pytest.mark.parametrize("text", ["", ":1883", "host:", "host:port", "host:70000", "[::1", "[::1]x", "[]:80",
                                  "[::1]:", "host:-1"])
def test_split_host_port_rejects(text):
    with pytest.raises(ValueError):
        config.split_host_port(text)


def test_broker_flag_takes_ipv6():
    import argparse

    from edgepose.daemon import service

    p = argparse.ArgumentParser()
    service.add_arguments(p)
    o = config.overrides_from_flags(p.parse_args(["--broker", "[::1]:1884"]))
    assert o["mqtt"] == {"host": "::1", "port": 1884}
    assert config.overrides_from_flags(p.parse_args(["--broker", "fd00::5"]))["mqtt"] == {"host": "fd00::5"}
    with pytest.raises(ConfigError, match="bad --broker"):
        config.overrides_from_flags(p.parse_args(["--broker", "host:port"]))


def test_file_errors_name_the_file_and_the_section(tmp_path):
    with pytest.raises(ConfigError, match=r"edgepose.toml: unknown config section \[mqt\]"):
        config.load(write(tmp_path, '[mqt]\nhost = "x"\n'), environ={})
    with pytest.raises(ConfigError, match=r"edgepose.toml: sink = \.\.\. is outside any \[section\] "
                                          r"\(it belongs in \[output\]\)"):
        config.load(write(tmp_path, 'sink = "mqtt"\n'), environ={})
    with pytest.raises(ConfigError, match=r"it belongs in \[smoothing\] or \[tracking\]"):
        config.load(write(tmp_path, 'enabled = false\n'), environ={})
    with pytest.raises(ConfigError, match=r"\[model\] must be a table of keys"):
        config.load(write(tmp_path, 'model = 3\n'), environ={})
