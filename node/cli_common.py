"""What every ``pacsmesh`` sub-command shares: one-line errors, configuration, --data-dir."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from node.config import ConfigError, NodeConfig, load_config
from node.data_dir_modes import set_process_umask

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
