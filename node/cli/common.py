"""What every ``pacsmesh`` sub-command shares: one-line errors, configuration, --data-dir,
the running node's HTTP API, progress bars."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from node.config import ConfigError, NodeConfig, load_config
from node.data_dir_modes import set_process_umask
from node.identity import CERT_FILE, IDENTITY_DIR

err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    # soft_wrap: one line whatever the terminal width (Rich would fold long paths).
    err.print(f"pacsmesh: error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def _config(**cli: Any) -> NodeConfig:
    try:
        config = load_config(cli)
    except ConfigError as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from None
    # Before this command creates anything in the data dir (node/data_dir_modes.py).
    set_process_umask(shared=config.data_dir_group is not None)
    return config


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where objects and the index live (default: the user's data dir).",
)


def local_url(config: NodeConfig, path: str) -> tuple[str, ssl.SSLContext | None]:
    # Here, not at the top: node.http imports aiohttp, which ``pacsmesh run`` imports only
    # once its DICOM port is open (node/app.py).
    from node.http.serving import local_client

    scheme, context = local_client(config.http_tls, config.http_tls_cert,
                                   config.data_dir / IDENTITY_DIR / CERT_FILE)
    return f"{scheme}://127.0.0.1:{config.http_port}{path}", context


def running_node_json(config: NodeConfig, path: str) -> Any:
    url, context = local_url(config, path)
    request = urllib.request.Request(url)
    if os.environ.get("PACSMESH_TOKEN"):  # a node that asks for tokens (pacsmesh token add)
        request.add_header("Authorization", f"Bearer {os.environ['PACSMESH_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as rsp:
            return json.loads(rsp.read())
    except (OSError, ValueError) as exc:
        _fail(f"no running node answers at {url} ({exc}); is it started?", code=1)
        raise AssertionError("unreachable") from None


def progress_bar(label: str) -> Progress:
    # Off when stderr is not a terminal: a log or a pipe gets the counts, not bar frames.
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)

