"""The ``pacsmesh`` command: one group, its sub-commands in modules by job.

``running`` (run, status, peers), ``archive`` (import, studies, fsck), ``media``
(export, and import of portable media), ``mesh`` (mesh ..., delete), ``access`` (audit,
token), ``patients`` (history), ``dicom_tools`` (retrieve, send, echo); what they share
(configuration, one-line errors, the running node's API) is in ``common``.
"""

from __future__ import annotations

import click

from node import __version__
from node.cli import access, archive, dicom_tools, media, mesh, patients, running
from node.data_dir_modes import set_process_umask
from node.log_format import escape_last_resort


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pacsmesh")
def main() -> None:
    """PACSmesh: a peer-to-peer, self-sufficient PACS node."""
    # Before anything is created: the data dir holds patient names, IDs and the audit trail.
    set_process_umask()
    # Every command's log lines, not only the node's, may carry what the network sent.
    escape_last_resort()


for command in (running.run, archive.import_, media.export, archive.studies, archive.fsck,
                running.status,
                running.peers,
                mesh.mesh, mesh.delete, dicom_tools.retrieve, dicom_tools.send_,
                dicom_tools.echo_, access.audit, access.token, patients.patients):
    main.add_command(command)
