"""Agent config: every mistake is refused with the field named, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgectl.agent.daemon.__main__ import main
from edgectl.agent.daemon.config import AgentConfig, ConfigError, load


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("edg_abcdef0123456789\n")
    path.chmod(0o600)
    return path


def write(tmp_path: Path, token_file: Path, extra: str = "", **fields: str) -> Path:
    values = {
        "controller_url": '"https://controller.isp.example:8470"',
        "gateway": '"gw-a"',
        "token_file": f'"{token_file}"',
        "state_dir": f'"{tmp_path / "state"}"',
        **fields,
    }
    body = "".join(f"{k} = {v}\n" for k, v in values.items() if v != "")
    path = tmp_path / "agent.toml"
    path.write_text(f"[agent]\n{body}{extra}")
    return path


def test_minimal_config_takes_defaults(tmp_path: Path, token_file: Path) -> None:
    config = load(write(tmp_path, token_file))
    assert config == AgentConfig(
        controller_url="https://controller.isp.example:8470",
        gateway="gw-a",
        token_file=token_file,
        state_dir=tmp_path / "state",
        metrics_listen=("127.0.0.1", 9471),
        controller_urls=("https://controller.isp.example:8470",),
    )
    assert config.urls == ("https://controller.isp.example:8470",)


def test_every_setting(tmp_path: Path, token_file: Path) -> None:
    extra = (
        'netns = "lab-gw"\nmetrics_listen = "[::1]:9500"\npoll_wait = 10\n'
        "backoff_min = 0.2\nbackoff_max = 5\ndrift_interval = 1\nreport_interval = 15\n"
        "request_timeout = 3\nreport_min_gap = 0\noffenders_window = 300\n"
    )
    config = load(write(tmp_path, token_file, extra, controller_url='"http://127.0.0.1:8470/"'))
    assert config.controller_url == "http://127.0.0.1:8470"
    assert config.netns == "lab-gw"
    assert config.metrics_listen == ("::1", 9500)
    assert (config.poll_wait, config.backoff_min, config.backoff_max) == (10.0, 0.2, 5.0)
    assert (config.drift_interval, config.report_interval, config.request_timeout) == (1, 15, 3)
    assert config.report_min_gap == 0
    assert config.offenders_window == 300


@pytest.mark.parametrize(
    ("fields", "extra", "field", "words"),
    [
        ({"gateway": ""}, "", "agent.gateway", "required"),
        ({"state_dir": ""}, "", "agent.state_dir", "required"),
        ({}, "colour = 1\n", "agent.colour", "unknown setting"),
        ({"controller_url": '"ftp://x"'}, "", "agent.controller_url", "http(s)://"),
        ({"controller_url": '"http://10.0.0.1:8470"'}, "", "agent.controller_url", "in clear"),
        ({"gateway": '"GW A"'}, "", "agent.gateway", "not a gateway name"),
        ({"gateway": "3"}, "", "agent.gateway", "expected a string"),
        ({"state_dir": '"relative/dir"'}, "", "agent.state_dir", "absolute"),
        ({}, 'netns = "../x"\n', "agent.netns", "not a network namespace name"),
        ({}, 'metrics_listen = "localhost"\n', "agent.metrics_listen", "HOST:PORT"),
        ({}, 'metrics_listen = "example.com:80"\n', "agent.metrics_listen", "IP address"),
        ({}, "poll_wait = -1\n", "agent.poll_wait", "between"),
        ({}, 'poll_wait = "30"\n', "agent.poll_wait", "number of seconds"),
        ({}, "drift_interval = 10\n", "agent.drift_interval", "between"),
        ({}, "backoff_min = 5\nbackoff_max = 1\n", "agent.backoff_max", "backoff_min"),
        ({}, 'allow_plain_http = "yes"\n', "agent.allow_plain_http", "true or false"),
        ({}, "offenders_window = 0\n", "agent.offenders_window", "between"),
        ({}, "offenders_window = 90000\n", "agent.offenders_window", "between"),
        ({"controller_url": ""}, "", "agent.controller_url", "required (or controller_urls)"),
        ({}, 'controller_urls = ["https://a:1"]\n', "agent.controller_urls", "not both"),
        ({"controller_url": ""}, "controller_urls = []\n", "agent.controller_urls", "1-16"),
        (
            {"controller_url": ""},
            'controller_urls = "https://a:1"\n',
            "agent.controller_urls",
            "list of",
        ),
        (
            {"controller_url": ""},
            'controller_urls = ["https://a:1", "http://10.0.0.2:1"]\n',
            "agent.controller_urls[1]",
            "in clear",
        ),
        (
            {"controller_url": ""},
            'controller_urls = ["https://a:1", 3]\n',
            "agent.controller_urls[1]",
            "expected a string",
        ),
        (
            {"controller_url": ""},
            'controller_urls = ["https://a:1", "https://a:1/"]\n',
            "agent.controller_urls[1]",
            "twice",
        ),
    ],
)
def test_mistakes_name_the_field(
    tmp_path: Path, token_file: Path, fields: dict[str, str], extra: str, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, token_file, extra, **fields))
    assert caught.value.field == field
    assert words in caught.value.reason


def test_several_controllers_in_order(tmp_path: Path, token_file: Path) -> None:
    urls = (
        'controller_urls = ["https://ctl-1.isp.example:8470", "https://ctl-2.isp.example:8470/"]\n'
    )
    config = load(write(tmp_path, token_file, urls, controller_url=""))
    assert config.urls == ("https://ctl-1.isp.example:8470", "https://ctl-2.isp.example:8470")
    assert config.controller_url == "https://ctl-1.isp.example:8470"


def test_plain_http_behind_a_proxy_is_allowed_when_said(tmp_path: Path, token_file: Path) -> None:
    path = write(
        tmp_path,
        token_file,
        "allow_plain_http = true\n",
        controller_url='"http://10.0.0.1:8470"',
    )
    assert load(path).allow_plain_http


@pytest.mark.parametrize(
    ("mode", "content", "words"),
    [
        (0o644, "edg_x\n", "world-readable"),
        (0o602, "edg_x\n", "world-readable or world-writable"),
        (0o600, "\n", "exactly one token"),
        (0o600, "edg_x edg_y\n", "exactly one token"),
    ],
)
def test_token_file_is_checked(
    tmp_path: Path, token_file: Path, mode: int, content: str, words: str
) -> None:
    token_file.write_text(content)
    os.chmod(token_file, mode)
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, token_file))
    assert caught.value.field == "agent.token_file"
    assert words in caught.value.reason


def test_missing_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, tmp_path / "nope"))
    assert caught.value.field == "agent.token_file" and "No such file" in caught.value.reason


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[agent\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.field == "config"


def test_check_config_command(
    tmp_path: Path, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, token_file)
    assert main(["check-config", "--config", str(good)]) == 0
    assert "ok (gateway gw-a" in capsys.readouterr().out
    token_file.chmod(0o644)
    assert main(["check-config", "--config", str(good)]) == 2
    err = capsys.readouterr().err
    assert "agent.token_file" in err and "world-readable" in err
    assert "Traceback" not in err


def test_agent_files_write_one_url_or_several_as_the_agent_reads_them(tmp_path: Path) -> None:
    from edgectl.testing.fleet import AgentFiles

    urls = ["https://ctl-1.isp.example:8470", "https://ctl-2.isp.example:8470"]
    several = AgentFiles(tmp_path / "several").write(
        controller_url=urls, gateway="gw-a", netns="gw-a-ns", token="edg_abcdef0123456789"
    )
    assert load(several).urls == tuple(urls)
    one = AgentFiles(tmp_path / "one").write(
        controller_url=urls[0], gateway="gw-a", netns="gw-a-ns", token="edg_abcdef0123456789"
    )
    assert load(one).urls == (urls[0],)
