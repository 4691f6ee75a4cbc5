"""Which instances an export writes: the studies named, or a patient's studies, every
instance here when this returns. Instances only other members hold are fetched through
the mesh's fetcher first (the seam C-GET and WADO-RS use), so a failed fetch stops the
export before a byte of the medium is written."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from node.dicom.retrieve_scp import MeshSource
from node.index import Index, StoredInstance
from node.media.dicomdir import MediaError
from node.query import parse_identifier

log = logging.getLogger(__name__)


class NotFound(MediaError):
    """Nothing matches what was asked for."""


class NotFetched(MediaError):
    """Some instances are held only on other members, which could not give them."""


async def select_instances(index: Index, mesh: MeshSource | None, studies: list[str],
                           patient: str | None = None) -> list[StoredInstance]:
    """Every instance of ``studies`` (or of ``patient``'s studies), held here on return."""
    identifiers = [_identifier("STUDY", "StudyInstanceUID", uid) for uid in studies]
    if patient is not None:
        identifiers.append(_identifier("PATIENT", "PatientID", patient))
    over_mesh = index.mesh_view is not None
    found: dict[str, StoredInstance] = {}
    for root, ds in identifiers:
        matched = await index.instances_for(parse_identifier(ds, root), mesh=over_mesh)
        if not matched:
            what = "the patient" if root == "PATIENT" else f"study {ds.StudyInstanceUID}"
            raise NotFound(f"no instances of {what} are known here or in the mesh")
        for inst in matched:
            found.setdefault(inst.sop_uid, inst)
    instances = list(found.values())
    remote = [i for i in instances if not i.local]
    if remote:
        await _fetch(mesh, remote)
    if mesh is not None:
        await mesh.used_locally([i.sop_uid for i in instances if i.local])
    return instances


def _identifier(root: str, keyword: str, value: str) -> tuple[str, Dataset]:
    ds = Dataset()
    ds.QueryRetrieveLevel = root
    setattr(ds, keyword, value)
    return root, ds


async def _fetch(mesh: MeshSource | None, remote: list[StoredInstance]) -> None:
    if mesh is None:
        raise NotFetched(f"{len(remote)} instance(s) are held only on other members; a"
                         " running node fetches them (export through it)")
    fetching = await mesh.start(remote)
    try:
        for inst in remote:
            await fetching.take(inst.sop_uid)
    except Exception as exc:  # any holder's failure: the export cannot be whole
        log.warning("media export: instance %s not fetched from the mesh: %s",
                    inst.sha256[:12], exc)
        raise NotFetched("an instance held on other members could not be fetched from"
                         " any of them") from None
    finally:
        await fetching.close()
