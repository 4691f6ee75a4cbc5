"""Configuration: sources and their precedence, validation, and what ``pacsmesh run`` says
when a setting is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.config import (
    DEFAULT_DICOM_PORT,
    DEFAULT_HTTP_PORT,
    ConfigError,
    RemoteAE,
    aet_from_hostname,
    load_config,
    parse_host_port,
    parse_remote_ae,
    validate_aet,
    validate_port,
)
from tests.support import NodeProcess, free_port

REPO = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any PACSMESH_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSMESH_")}
    env.update(extra)
    return env


def write_toml(data_dir: Path, text: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "pacsmesh.toml"
    path.write_text(text)
    return path


def assert_one_line_error(exc: pytest.ExceptionInfo[ConfigError], *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# --- precedence ------------------------------------------------------------------------


def test_defaults_without_any_source(tmp_path: Path) -> None:
    config = load_config(cli={"data_dir": tmp_path}, env={})
    assert config.data_dir == tmp_path
    assert config.aet == aet_from_hostname()
    assert config.bind == "0.0.0.0"
    assert config.dicom_port == DEFAULT_DICOM_PORT
    assert config.http_port == DEFAULT_HTTP_PORT
    assert config.mdns is True
    assert config.log_level == "INFO"
    assert config.modalities == ()
    assert config.peers == ()
    assert config.mesh_port == 11113 and config.join is None
    assert config.device_type == "WSD"


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    write_toml(tmp_path, """
aet = "TOMLAET"
bind = "127.0.0.1"
dicom_port = 2104
http_port = 2080
mdns = false
log_level = "debug"
modalities = ["VIEWER@10.0.0.5:104", "CT1@[::1]:4242"]
peers = ["10.0.0.7:11113"]
mesh_port = 2113
device_type = "archive"
""")
    config = load_config(cli={"data_dir": tmp_path}, env={})
    assert config.aet == "TOMLAET"
    assert config.bind == "127.0.0.1"
    assert (config.dicom_port, config.http_port) == (2104, 2080)
    assert config.mdns is False
    assert config.log_level == "DEBUG"
    assert config.modalities == (
        RemoteAE("VIEWER", "10.0.0.5", 104), RemoteAE("CT1", "::1", 4242),
    )
    assert config.modality("CT1") == RemoteAE("CT1", "::1", 4242)
    assert config.modality("NOPE") is None
    assert config.peers == (("10.0.0.7", 11113),)
    assert config.mesh_port == 2113
    assert config.device_type == "ARCHIVE"


def test_env_overrides_toml_and_cli_overrides_env(tmp_path: Path) -> None:
    write_toml(tmp_path, 'aet = "TOMLAET"\ndicom_port = 2104\nhttp_port = 2080\nmesh_port = 2113\n'
                         'log_level = "ERROR"\n')
    env = {
        "PACSMESH_DICOM_PORT": "3104",
        "PACSMESH_MESH_PORT": "3113",
        "PACSMESH_MDNS": "off",
        "PACSMESH_MODALITIES": "A@h1:1, B@h2:2",
        "PACSMESH_AET": "",  # empty: not set
    }
    cli = {"data_dir": tmp_path, "dicom_port": 4104, "aet": None, "modalities": (),
           "log_level": "warning"}
    config = load_config(cli=cli, env=env)
    assert config.aet == "TOMLAET"  # only the file sets it
    assert config.http_port == 2080  # only the file sets it
    assert config.mesh_port == 3113  # env beats the file
    assert config.mdns is False
    assert [str(m) for m in config.modalities] == ["A@h1:1", "B@h2:2"]  # () from CLI: unset
    assert config.dicom_port == 4104  # CLI beats env and file
    assert config.log_level == "WARNING"  # CLI beats the file


def test_data_dir_from_env_and_cli(tmp_path: Path) -> None:
    from_env, from_cli = tmp_path / "env", tmp_path / "cli"
    write_toml(from_env, 'aet = "ENVDIR"\n')
    write_toml(from_cli, 'aet = "CLIDIR"\n')
    env = {"PACSMESH_DATA_DIR": str(from_env)}
    assert load_config(cli={}, env=env).aet == "ENVDIR"
    config = load_config(cli={"data_dir": from_cli}, env=env)
    assert (config.data_dir, config.aet) == (from_cli, "CLIDIR")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": path}, env={})
    assert_one_line_error(exc, str(path), "not a directory")


# --- AE titles ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["A", "PACSMESH", "A" * 16, "CT-1_ROOM 2", "lower"])
def test_valid_ae_titles(value: str) -> None:
    assert validate_aet(value) == value


def test_ae_title_surrounding_spaces_are_not_significant() -> None:
    assert validate_aet("  PACS ") == "PACS"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("A" * 17, "longer than 16"),
        ("AB\\CD", "backslash"),
        ("", "empty"),
        ("    ", "empty"),
        ("ÄRZTEHAUS", "ASCII"),
        ("TAB\tHERE", "ASCII"),
    ],
)
def test_invalid_ae_titles(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_aet(value)
    assert_one_line_error(exc, fragment)


def test_invalid_ae_title_in_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": tmp_path, "aet": "SEVENTEEN_CHARS_X"}, env={})
    assert_one_line_error(exc, "SEVENTEEN_CHARS_X", "16")
    with pytest.raises(ConfigError):
        load_config(cli={"data_dir": tmp_path}, env={"PACSMESH_AET": "A\\B"})


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("radiology-ws01.hospital.example", "RADIOLOGY-WS01"),
        ("localhost", "LOCALHOST"),
        ("my host", "MY_HOST"),
        ("a-very-long-workstation-name", "A-VERY-LONG-WORK"),
        ("abcdefghijklmno_xyz", "ABCDEFGHIJKLMNO"),  # no trailing '_' after the cut
        ("ünïcode", "N_CODE"),
        ("___", "PACSMESH"),
        (".local", "PACSMESH"),
    ],
)
def test_aet_from_hostname(hostname: str, expected: str) -> None:
    aet = aet_from_hostname(hostname)
    assert aet == expected
    assert validate_aet(aet) == aet


def test_aet_from_this_host_is_valid() -> None:
    aet = aet_from_hostname()
    assert validate_aet(aet) == aet


# --- remote AEs, peers and ports -------------------------------------------------------


def test_parse_remote_ae() -> None:
    assert parse_remote_ae("VIEWER@10.0.0.5:104") == RemoteAE("VIEWER", "10.0.0.5", 104)
    assert parse_remote_ae("V@[fe80::1]:11112") == RemoteAE("V", "fe80::1", 11112)
    assert parse_remote_ae("V@ws.example:104") == RemoteAE("V", "ws.example", 104)
    assert str(parse_remote_ae("V@host:104")) == "V@host:104"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("VIEWER", "AET@HOST:PORT"),
        ("VIEWER@host", "AET@HOST:PORT"),
        ("VIEWER@:104", "AET@HOST:PORT"),
        ("VIEWER:104", "AET@HOST:PORT"),
        ("@host:104", "empty"),
        ("SEVENTEEN_CHARS_X@host:104", "longer than 16"),
        ("VIEWER@host:abc", "1 to 65535"),
        ("VIEWER@host:0", "1 to 65535"),
        ("VIEWER@host:65536", "1 to 65535"),
    ],
)
def test_parse_remote_ae_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_remote_ae(text)
    assert_one_line_error(exc, fragment)


def test_remote_ae_errors_in_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": tmp_path, "modalities": ("VIEWER@host",)}, env={})
    assert_one_line_error(exc, "VIEWER@host")
    with pytest.raises(ConfigError) as exc:
        load_config(
            cli={"data_dir": tmp_path, "modalities": ("V@h1:104", "V@h2:104")}, env={}
        )
    assert_one_line_error(exc, "'V'", "twice")


def test_parse_host_port() -> None:
    assert parse_host_port("10.0.0.7:8080") == ("10.0.0.7", 8080)
    assert parse_host_port("[::1]:8080") == ("::1", 8080)
    for bad in ("10.0.0.7", ":8080", "host:http"):
        with pytest.raises(ConfigError):
            parse_host_port(bad)


@pytest.mark.parametrize("value", [1, 104, "11112", 65535])
def test_valid_ports(value: int | str) -> None:
    assert validate_port(value, "DICOM port") == int(value)


@pytest.mark.parametrize("value", [0, -1, 65536, "abc", "", None, True, 104.5])
def test_bad_ports(value: object) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_port(value, "DICOM port")
    assert_one_line_error(exc, "DICOM port", "1 to 65535")


def test_bad_ports_in_every_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DICOM port"):
        load_config(cli={"data_dir": tmp_path, "dicom_port": 0}, env={})
    with pytest.raises(ConfigError, match="HTTP port"):
        load_config(cli={"data_dir": tmp_path}, env={"PACSMESH_HTTP_PORT": "eighty"})
    write_toml(tmp_path, "dicom_port = 70000\n")
    with pytest.raises(ConfigError, match="DICOM port"):
        load_config(cli={"data_dir": tmp_path}, env={})
    write_toml(tmp_path, "dicom_port = 104.9\n")
    with pytest.raises(ConfigError, match="DICOM port"):
        load_config(cli={"data_dir": tmp_path}, env={})


def test_same_port_twice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": tmp_path, "dicom_port": 9000, "http_port": 9000}, env={})
    assert_one_line_error(exc, "must differ", "9000")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PACSMESH_LOG_LEVEL": "LOUD"}, "log level"),
        ({"PACSMESH_MDNS": "perhaps"}, "mdns"),
        ({"PACSMESH_BIND": "my-laptop"}, "bind address"),
        ({"PACSMESH_DEVICE_TYPE": "PRINTER"}, "device type"),
        ({"PACSMESH_MESH_PORT": "11112"}, "must differ"),
    ],
)
def test_other_bad_values(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": tmp_path}, env=env)
    assert_one_line_error(exc, fragment)


# --- the TOML file ---------------------------------------------------------------------


def test_unknown_toml_keys(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'aet = "X"\ndicom_prot = 104\ncolour = "blue"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": tmp_path}, env={})
    assert_one_line_error(exc, str(path), "colour, dicom_prot")


def test_broken_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'aet = "unterminated\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": tmp_path}, env={})
    assert_one_line_error(exc, "cannot read", str(path))


def test_toml_value_of_the_wrong_type(tmp_path: Path) -> None:
    write_toml(tmp_path, 'modalities = "VIEWER@host:104"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(cli={"data_dir": tmp_path}, env={})
    assert_one_line_error(exc, "modalities", "list")


# --- end to end ------------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True,
        timeout=timeout, cwd=REPO, env=clean_env(COLUMNS="80"),
    )
    return result, time.monotonic() - start


@pytest.mark.parametrize(
    ("args", "toml", "fragment"),
    [
        (["--dicom-port", "0"], None, "DICOM port"),
        (["--aet", "SEVENTEEN_CHARS_X"], None, "longer than 16"),
        (["--modality", "VIEWER@host"], None, "AET@HOST:PORT"),
        ([], 'aet = "unterminated\n', "cannot read"),
        ([], "dicom_prot = 104\n", "unknown setting"),
    ],
    ids=["port-0", "aet-17-chars", "bad-modality", "broken-toml", "unknown-toml-key"],
)
def test_run_with_bad_config_fails_with_one_line(
    tmp_path: Path, args: list[str], toml: str | None, fragment: str
) -> None:
    # A deep data dir: the message names it and must stay one line however long it is.
    data_dir = tmp_path / ("d" * 60) / "data"
    data_dir.mkdir(parents=True)
    if toml is not None:
        write_toml(data_dir, toml)
    result, elapsed = run_cli(
        "run", "--data-dir", str(data_dir), "--bind", "127.0.0.1", "--no-mdns",
        "--http-port", str(free_port()), *args,
    )
    assert result.returncode != 0
    assert elapsed < 15
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pacsmesh: error:")
    assert fragment in lines[0]
    assert not (data_dir / "index.sqlite").exists()  # nothing was started


class TomlAetNode(NodeProcess):
    """A node whose command line leaves the AE title to the data dir's pacsmesh.toml."""

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index("--aet")
        del cmd[at:at + 2]
        return cmd


def test_node_uses_aet_from_toml(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    write_toml(data_dir, 'aet = "FROMTOML"\nlog_level = "WARNING"\n')
    node = TomlAetNode(data_dir=data_dir, env=clean_env())
    assert "--aet" not in node.command()
    try:
        node.start()
        assert node.status()["aet"] == "FROMTOML"
    finally:
        node.stop()


def test_node_env_aet_beats_toml(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    write_toml(data_dir, 'aet = "FROMTOML"\n')
    node = TomlAetNode(data_dir=data_dir, env=clean_env(PACSMESH_AET="FROMENV"))
    try:
        node.start()
        assert node.status()["aet"] == "FROMENV"
    finally:
        node.stop()


def test_storage_commitment_deadline(tmp_path: Path) -> None:
    assert load_config({"data_dir": tmp_path}, env={}).storage_commitment_deadline == 3600
    write_toml(tmp_path, "storage_commitment_deadline = 90\n")
    assert load_config({"data_dir": tmp_path}, env={}).storage_commitment_deadline == 90
    env = {"PACSMESH_STORAGE_COMMITMENT_DEADLINE": "2.5"}
    assert load_config({"data_dir": tmp_path}, env=env).storage_commitment_deadline == 2.5
    with pytest.raises(ConfigError, match="storage_commitment_deadline"):
        load_config({"data_dir": tmp_path}, env={"PACSMESH_STORAGE_COMMITMENT_DEADLINE": "0"})
