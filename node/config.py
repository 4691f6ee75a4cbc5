"""Node configuration: defaults < ``pacsmesh.toml`` in the data dir < ``PACSMESH_*`` env < CLI.

Pure code: nothing here opens sockets or touches the index. Every problem is a
:class:`ConfigError` whose message is one line a hospital IT admin can act on.
"""

from __future__ import annotations

import grp
import ipaddress
import itertools
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from node.alerts import settings as alert_settings

CONFIG_FILE = "pacsmesh.toml"
ENV_PREFIX = "PACSMESH_"
DEFAULT_DICOM_PORT = 11112
DEFAULT_HL7_PORT = 2575  # IANA "hl7": the HL7 listener's port once it is switched on
DEFAULT_HTTP_PORT = 8080
DEFAULT_MESH_PORT = 11113
DEFAULT_CACHE_BYTES = 10 * 2**30
DEFAULT_HTTP_HEADER_TIMEOUT = 10.0
DEFAULT_HTTP_MAX_BODY = 2**30
DEFAULT_COMMITMENT_DEADLINE = 3600.0
HTTP_TLS_MODES = ("off", "on", "self-signed")
# http_tls also takes the booleans other switches take (dicom_tls, mdns).
_TLS_ALIASES = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}
QUERY_SCOPES = ("mesh", "local")
ACCESS_MODES = ("open", "strict")
HTTP_AUTH_MODES = ("auto", "tokens", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value is wrong; the message is a single line."""


@dataclass(frozen=True)
class RemoteAE:
    """A DICOM application entity reachable at a fixed address (a C-MOVE destination)."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


# --- DICOM port limits (issue 21): who may hold the port's associations, for how long ---
_DICOM_LIMIT_KEYS = ("max_associations", "max_associations_per_address",
                     "reserved_associations", "acse_timeout", "pdu_timeout")


@dataclass(frozen=True)
class DicomLimits:
    max_associations: int = 32  # connections at once, all peers together
    max_associations_per_address: int = 8  # at once from one IP address
    reserved_associations: int = 8  # of max_associations, only for known AEs
    acse_timeout: float = 15.0  # s from accept to a complete A-ASSOCIATE-RQ
    pdu_timeout: float = 30.0  # s a started PDU may go without a byte


def _count(value: Any, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if isinstance(value, bool) or str(number) != str(value).strip() or not low <= number <= high:
        raise ConfigError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return number


def _dicom_limits(merged: Mapping[str, Any]) -> DicomLimits:
    d = DicomLimits()
    limits = DicomLimits(
        max_associations=_count(merged.get("max_associations", d.max_associations),
                                "max_associations", 1, 10000),
        max_associations_per_address=_count(
            merged.get("max_associations_per_address", d.max_associations_per_address),
            "max_associations_per_address", 1, 10000),
        reserved_associations=_count(
            merged.get("reserved_associations", d.reserved_associations),
            "reserved_associations", 0, 10000),
        acse_timeout=_seconds(merged.get("acse_timeout", d.acse_timeout), "acse_timeout"),
        pdu_timeout=_seconds(merged.get("pdu_timeout", d.pdu_timeout), "pdu_timeout"),
    )
    if limits.reserved_associations >= limits.max_associations:
        raise ConfigError(
            f"reserved_associations ({limits.reserved_associations}) must be less than "
            f"max_associations ({limits.max_associations})")
    return limits


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    aet: str
    bind: str = "0.0.0.0"
    dicom_port: int = DEFAULT_DICOM_PORT
    http_port: int = DEFAULT_HTTP_PORT
    modalities: tuple[RemoteAE, ...] = field(default_factory=tuple)
    mdns: bool = True
    log_level: str = "INFO"
    peers: tuple[tuple[str, int], ...] = ()  # static peers' HTTP endpoints (host, port)
    interfaces: tuple[str, ...] = ()  # network interfaces to announce on; empty: all
    device_type: str = "WSD"  # PS3.15 Annex H PrimaryDeviceType: ARCHIVE or WSD
    mesh_port: int = DEFAULT_MESH_PORT
    join: str | None = None  # invite token, used until this node is a member
    replicas: int = 2  # every study is kept on this many mesh members
    hint_after: float = 60.0  # seconds an owner may be unreachable before a stand-in
    query_scope: str = "mesh"  # C-FIND answers from the mesh catalog, or local holdings
    cache_bytes: int = DEFAULT_CACHE_BYTES  # instances fetched from the mesh kept here
    dicom_tls: bool = False  # DIMSE over TLS on the DICOM port, announced _dicom-tls._tcp
    dicom_tls_cert: Path | None = None  # PEM; default: the node's own certificate
    dicom_tls_key: Path | None = None  # PEM; default: the node's own key
    access: str = "open"  # DICOM: "strict" associates only with known AEs
    allowed_aets: tuple[str, ...] = ()  # AEs known besides modalities and mesh members
    http_auth: str = "auto"  # "auto": tokens once one exists; "tokens"; "none"
    encrypt_at_rest: bool = False  # seal new objects (node/at_rest.py)
    # Derives the at-rest key instead of a key file. Never shown, never in pacsmesh.toml.
    at_rest_passphrase: bytes | None = field(default=None, repr=False)
    # HTTP hardening (node/http/serving.py): HTTPS on the HTTP port with the given PEM
    # files ("on") or the node's own certificate ("self-signed"); a time limit on request
    # headers; the largest body accepted.
    http_tls: str = "off"
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    http_header_timeout: float = DEFAULT_HTTP_HEADER_TIMEOUT
    http_max_body: int = DEFAULT_HTTP_MAX_BODY
    # Share the data dir with this group (folders 2750, files 0640); None: owner-only.
    data_dir_group: str | None = None
    # Seconds a storage commitment request may wait for its instances to be on R
    # members; what is short then is reported failed.
    storage_commitment_deadline: float = DEFAULT_COMMITMENT_DEADLINE
    # HL7 v2 over MLLP (node.hl7): off unless a port is given; TLS with the node's
    # certificate (or the DICOM TLS files) when hl7_tls.
    hl7_port: int | None = None
    hl7_tls: bool = False
    # Thresholds of the alerts, and where they are sent (node/alerts/).
    alerts: alert_settings.AlertSettings = field(default_factory=alert_settings.AlertSettings)

    @property
    def data_dir_gid(self) -> int | None:
        return None if self.data_dir_group is None else grp.getgrnam(self.data_dir_group).gr_gid
    dicom_limits: DicomLimits = field(default_factory=DicomLimits)

    def modality(self, aet: str) -> RemoteAE | None:
        for remote in self.modalities:
            if remote.aet == aet:
                return remote
        return None


def validate_aet(value: str, what: str = "AE title") -> str:
    """Return ``value`` if it is a valid DICOM AE title (PS3.5: AE VR), else raise."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be text, got {value!r}")
    stripped = value.strip(" ")
    if not stripped:
        raise ConfigError(f"{what} must not be empty")
    if len(value) > 16:
        raise ConfigError(f"{what} {value!r} is longer than 16 characters")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ConfigError(f"{what} {value!r} may hold only printable ASCII without backslash")
    return stripped


def aet_from_hostname(hostname: str | None = None) -> str:
    """Derive a valid AE title from the host name: upper case, [A-Z0-9_-], at most 16 chars."""
    name = (hostname or socket.gethostname()).split(".")[0].upper()
    name = re.sub(r"[^A-Z0-9_-]", "_", name)[:16].strip("_")
    return name or "PACSMESH"


def validate_port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number from 1 to 65535, got {value!r}") from None
    # bool and float are refused: int() would turn true into 1 and 104.9 into 104.
    if isinstance(value, bool | float) or not 1 <= port <= 65535:
        raise ConfigError(f"{what} must be a number from 1 to 65535, got {value!r}")
    return port


def parse_remote_ae(text: str) -> RemoteAE:
    """Parse ``AET@HOST:PORT``."""
    if not isinstance(text, str):
        raise ConfigError(f"a DICOM peer must be written AET@HOST:PORT, got {text!r}")
    aet, at, hostport = text.partition("@")
    host, colon, port = hostport.rpartition(":")
    if not at or not colon or not host:
        raise ConfigError(f"a DICOM peer must be written AET@HOST:PORT, got {text!r}")
    host = host.strip("[]")
    return RemoteAE(
        aet=validate_aet(aet, f"AE title in {text!r}"),
        host=host,
        port=validate_port(port, f"port in {text!r}"),
    )


def parse_host_port(text: Any) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (IPv6 hosts in brackets)."""
    host, colon, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not colon or not host:
        raise ConfigError(f"a peer must be written HOST:PORT, got {text!r}")
    return host, validate_port(port, f"port in {text!r}")


def _seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not 0 < seconds <= 86400:
        raise ConfigError(f"{what} must be a number of seconds from 0 to 86400, got {value!r}")
    return seconds


def _replicas(value: Any) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool | float) or not 1 <= count <= 16:
        raise ConfigError(f"replicas must be a number from 1 to 16, got {value!r}")
    return count


def _cache_bytes(value: Any) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if isinstance(value, bool | float) or count < 0:
        raise ConfigError(f"cache_bytes must be a whole number of bytes >= 0, got {value!r}")
    return count


def _one_of(value: Any, key: str, choices: tuple[str, ...]) -> str:
    choice = str(value).strip().lower()
    if choice not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return choice


def _pem_file(value: Any, what: str) -> Path | None:
    if value is None or value == "":
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}: no such file {path}")
    return path


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{what} must be a list")
    return list(value)


def _parse_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{what} must be true or false, got {value!r}")


def _passphrase(file: Any, env: Mapping[str, str]) -> bytes | None:
    if file:
        path = Path(str(file)).expanduser()
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the at-rest passphrase file {path}: "
                              f"{exc.strerror}") from None
        # A trailing newline is what editors and `echo` leave, not part of the secret.
        passphrase = text.rstrip(b"\r\n")
    else:
        passphrase = env.get(PASSPHRASE_ENV, "").encode()
    return passphrase or None


def _validate_bind(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ConfigError(f"bind address must be an IP address, got {value!r}") from None


def _http_tls(merged: Mapping[str, Any]) -> dict[str, Any]:
    """The HTTP hardening block: a certificate and key switch HTTPS on unless
    ``http_tls`` says otherwise."""
    cert = _pem_file(merged.get("http_tls_cert"), "http_tls_cert")
    key = _pem_file(merged.get("http_tls_key"), "http_tls_key")
    if (cert is None) != (key is None):
        raise ConfigError("http_tls_cert and http_tls_key go together: give both or neither")
    raw = merged.get("http_tls")
    if isinstance(raw, bool):
        raw = "on" if raw else "off"
    text = str(raw).strip().lower() if raw is not None else ("on" if cert else "off")
    mode = _one_of(_TLS_ALIASES.get(text, text), "http_tls", HTTP_TLS_MODES)
    if mode == "on" and cert is None:
        raise ConfigError('http_tls = "on" needs http_tls_cert and http_tls_key '
                          '(or http_tls = "self-signed")')
    if mode == "self-signed" and cert is not None:
        raise ConfigError('http_tls = "self-signed" uses the node\'s own certificate: '
                          "drop http_tls_cert and http_tls_key, or set http_tls = \"on\"")
    try:
        max_body = int(merged.get("http_max_body", DEFAULT_HTTP_MAX_BODY))
    except (TypeError, ValueError):
        max_body = 0
    if isinstance(merged.get("http_max_body"), bool | float) or max_body < 1:
        raise ConfigError("http_max_body must be a whole number of bytes >= 1, "
                          f"got {merged.get('http_max_body')!r}")
    return {
        "http_tls": mode, "http_tls_cert": cert, "http_tls_key": key,
        "http_header_timeout": _seconds(
            merged.get("http_header_timeout", DEFAULT_HTTP_HEADER_TIMEOUT),
            "http_header_timeout"),
        "http_max_body": max_body,
    }


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("pacsmesh", appauthor=False))


# The keys a user may set, in every source. ``modalities`` is a list in TOML and a
# comma- or space-separated string in the environment.
_KEYS = (
    "aet", "bind", "dicom_port", "http_port", "modalities", "mdns", "log_level",
    "peers", "interfaces", "device_type", "mesh_port", "join", "replicas",
    "hint_after", "query_scope", "cache_bytes", "dicom_tls", "dicom_tls_cert",
    "dicom_tls_key", "access", "allowed_aets", "http_auth", "encrypt_at_rest",
    "at_rest_passphrase_file", *_DICOM_LIMIT_KEYS,
    "http_tls", "http_tls_cert", "http_tls_key", "http_header_timeout", "http_max_body",
    "data_dir_group", "storage_commitment_deadline", "hl7_port", "hl7_tls",
    *alert_settings.KEYS,
)
# The passphrase itself comes only from the environment (or the file named above).
PASSPHRASE_ENV = ENV_PREFIX + "AT_REST_PASSPHRASE"
_LIST_KEYS = ("modalities", "peers", "interfaces", "allowed_aets")
DEVICE_TYPES = ("ARCHIVE", "WSD")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return data


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in _KEYS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is None or raw == "":
            continue
        values[key] = [v for v in re.split(r"[,\s]+", raw) if v] if key in _LIST_KEYS else raw
    return values


def load_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Merge every source and validate. ``cli`` holds only the options the user gave."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None and v != ()}
    env = os.environ if env is None else env

    data_dir_raw = cli.get("data_dir") or env.get(ENV_PREFIX + "DATA_DIR") or default_data_dir()
    data_dir = Path(data_dir_raw).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data dir {data_dir} exists and is not a directory")

    merged: dict[str, Any] = {}
    merged.update(_read_toml(data_dir / CONFIG_FILE))
    merged.update(_read_env(env))
    merged.update({k: v for k, v in cli.items() if k in _KEYS})

    modalities = tuple(
        parse_remote_ae(m) for m in _as_list(merged.get("modalities", []), "modalities")
    )
    seen: set[str] = set()
    for m in modalities:
        if m.aet in seen:
            raise ConfigError(f"modality AE title {m.aet!r} is configured twice")
        seen.add(m.aet)

    peers = tuple(parse_host_port(p) for p in _as_list(merged.get("peers", []), "peers"))
    interfaces = tuple(str(i) for i in _as_list(merged.get("interfaces", []), "interfaces"))
    device_type = str(merged.get("device_type", "WSD")).upper()
    if device_type not in DEVICE_TYPES:
        raise ConfigError(
            f"device type must be one of {', '.join(DEVICE_TYPES)}, got {device_type!r}"
        )
    join = str(merged["join"]).strip() if merged.get("join") else None

    log_level = str(merged.get("log_level", "INFO")).upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")

    config = NodeConfig(
        data_dir=data_dir,
        aet=validate_aet(str(merged.get("aet") or aet_from_hostname())),
        bind=_validate_bind(merged.get("bind", "0.0.0.0")),
        dicom_port=validate_port(merged.get("dicom_port", DEFAULT_DICOM_PORT), "DICOM port"),
        http_port=validate_port(merged.get("http_port", DEFAULT_HTTP_PORT), "HTTP port"),
        modalities=modalities,
        mdns=_parse_bool(merged.get("mdns", True), "mdns"),
        log_level=log_level,
        peers=peers,
        interfaces=interfaces,
        device_type=device_type,
        mesh_port=validate_port(merged.get("mesh_port", DEFAULT_MESH_PORT), "mesh port"),
        join=join,
        replicas=_replicas(merged.get("replicas", 2)),
        hint_after=_seconds(merged.get("hint_after", 60.0), "hint_after"),
        query_scope=_one_of(merged.get("query_scope", "mesh"), "query_scope", QUERY_SCOPES),
        access=_one_of(merged.get("access", "open"), "access", ACCESS_MODES),
        allowed_aets=tuple(validate_aet(str(a), "allowed AE title")
                           for a in _as_list(merged.get("allowed_aets", []), "allowed_aets")),
        http_auth=_one_of(merged.get("http_auth", "auto"), "http_auth", HTTP_AUTH_MODES),
        cache_bytes=_cache_bytes(merged.get("cache_bytes", DEFAULT_CACHE_BYTES)),
        dicom_tls=_parse_bool(merged.get("dicom_tls", False), "dicom_tls"),
        dicom_tls_cert=_pem_file(merged.get("dicom_tls_cert"), "dicom_tls_cert"),
        dicom_tls_key=_pem_file(merged.get("dicom_tls_key"), "dicom_tls_key"),
        encrypt_at_rest=_parse_bool(merged.get("encrypt_at_rest", False), "encrypt_at_rest"),
        at_rest_passphrase=_passphrase(merged.get("at_rest_passphrase_file"), env),
        **_http_tls(merged),
        data_dir_group=_data_dir_group(merged.get("data_dir_group")),
        dicom_limits=_dicom_limits(merged),
        storage_commitment_deadline=_seconds(
            merged.get("storage_commitment_deadline", DEFAULT_COMMITMENT_DEADLINE),
            "storage_commitment_deadline"),
        hl7_port=(None if merged.get("hl7_port") in (None, "")
                  else validate_port(merged["hl7_port"], "HL7 port")),
        hl7_tls=_parse_bool(merged.get("hl7_tls", False), "hl7_tls"),
        alerts=_alerts(merged),
    )
    if (config.dicom_tls_cert is None) != (config.dicom_tls_key is None):
        raise ConfigError("dicom_tls_cert and dicom_tls_key go together: give both or neither")
    ports = {"DICOM": config.dicom_port, "HTTP": config.http_port, "mesh": config.mesh_port}
    if config.hl7_port is not None:
        ports["HL7"] = config.hl7_port
    for a, b in itertools.combinations(ports, 2):
        if ports[a] == ports[b]:
            raise ConfigError(f"{a} and {b} ports must differ, both are {ports[a]}")
    return config


def _alerts(merged: Mapping[str, Any]) -> alert_settings.AlertSettings:
    try:
        return alert_settings.parse(merged)
    except alert_settings.AlertSettingError as exc:
        raise ConfigError(str(exc)) from None


def _data_dir_group(value: Any) -> str | None:
    """A group that exists and that this user may give files to (is a member of)."""
    if value is None or value == "":
        return None
    name = str(value)
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"data_dir_group {name!r}: no such group") from None
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise ConfigError(f"data_dir_group {name!r}: this user is not in that group")
    return name
