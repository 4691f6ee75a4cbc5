"""The ``pacsmesh`` command: one group, its sub-commands in modules by job.

``running`` (run, status, peers), ``archive`` (import, studies, fsck), ``media``
(export, and import of portable media), ``mesh`` (mesh ..., delete), ``access`` (audit,
token), ``patients`` (history), ``dicom_tools`` (retrieve, send, echo), ``viewer`` (viewer
install, status); what they share (configuration, one-line errors, the running node's
API) is in ``common``.
"""

from __future__ import annotations

import importlib

import click

from node.data_dir_modes import set_process_umask
from node.log_format import escape_last_resort

# Each sub-command's module is imported only when that command runs: importing them all
# (the mesh stack, aiohttp, rich's tables) cost ``pacsmesh run`` a third of its start-up
# before the DICOM port could open (benchmarks/startup.py).
_COMMANDS = {
    "run": ("running", "run"), "status": ("running", "status"),
    "peers": ("running", "peers"),
    "import": ("archive", "import_"), "studies": ("archive", "studies"),
    "fsck": ("archive", "fsck"),
    "mesh": ("mesh", "mesh"), "delete": ("mesh", "delete"),
    "retrieve": ("dicom_tools", "retrieve"), "send": ("dicom_tools", "send_"),
    "echo": ("dicom_tools", "echo_"),
    "audit": ("access", "audit"), "token": ("access", "token"),
    "export": ("media", "export"), "patients": ("patients", "patients"),
    "viewer": ("viewer", "viewer"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = _COMMANDS.get(cmd_name)
        if where is None:
            return None
        command = getattr(importlib.import_module(f"node.cli.{where[0]}"), where[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pacsmesh", prog_name="pacsmesh")
def main() -> None:
    """PACSmesh: a peer-to-peer, self-sufficient PACS node."""
    # Before anything is created: the data dir holds patient names, IDs and the audit trail.
    set_process_umask()
    # Every command's log lines, not only the node's, may carry what the network sent.
    escape_last_resort()
