"""The DICOMDIR of a medium, made by pydicom's FileSet from the instances' headers.

The FileSet is given each instance's header only (no pixel data) with the transfer
syntax it will have on the medium, and written to a scratch folder: the DICOMDIR it
writes there is the medium's, and the file ids it chose are where the export puts the
real instances. So the directory records are pydicom's, and no study is held in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from node.errors import NodeError
from node.media.fileids import check_file_id

FILE_SET_ID = "PACSMESH"


class MediaError(NodeError):
    """A medium cannot be written or read; the message says why, in one line."""


def build_dicomdir(headers: Iterable[Dataset]) -> tuple[bytes, dict[str, tuple[str, ...]]]:
    """The DICOMDIR's bytes and, for each SOP Instance UID, the file id its instance
    goes to. Each header needs ``file_meta`` with the transfer syntax written on the
    medium."""
    fs = FileSet()
    fs.ID = FILE_SET_ID
    added = 0
    for header in headers:
        try:
            fs.add(header)
            added += 1
        except ValueError as exc:
            # pydicom names the missing Type 1 key (PS3.3 F.5): say which instance.
            raise MediaError(f"instance {header.get('SOPInstanceUID', '?')} cannot be"
                             f" listed in a DICOMDIR: {exc}".split(" See DICOM")[0]) from None
    if not added:
        raise MediaError("nothing to write: no instances")
    with tempfile.TemporaryDirectory(prefix="pacsmesh-dicomdir-") as scratch:
        fs.write(scratch)
        data = (Path(scratch) / "DICOMDIR").read_bytes()
        # Read once written: the FileSet renumbers its records as it writes them.
        file_ids = {str(inst.SOPInstanceUID): check_file_id(inst.FileID.split("/"))
                    for inst in fs}
    return data, file_ids
