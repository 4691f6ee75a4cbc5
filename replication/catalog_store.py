"""The mesh catalog: which member holds which instance, with the keys C-FIND answers from.

Learned from the members' change feeds (migrations v4 and v7, owner "replication"). The
mesh_* views union it with this node's own holdings; :attr:`CatalogStore.tables` is
the seam (``node.index.MeshView``) through which the node's C-FIND reads them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from node.db import Database
from node.index import UPSERT_STATE
from node.query import Tables

# The match SQL of node.query reads tables studies, series and instances; over the mesh
# the same statement reads the mesh_* views instead, so there is one matcher.
MESH_TABLES = Tables("mesh_studies", "mesh_series", "mesh_instances")
_STUDY_KEYS = ("study_uid", "patient_id", "patient_name", "patient_birth_date",
               "patient_sex", "study_date", "study_time", "accession_number", "study_id",
               "study_description", "referring_physician_name")
_SERIES_KEYS = ("series_uid", "study_uid", "modality", "series_number",
                "series_description", "series_date", "series_time", "body_part_examined")


def _text(change: dict[str, Any], key: str) -> str:
    value = change.get(key)
    return "" if value is None else str(value)


def _catalog_row(node_id: str, c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["study_uid"], node_id, c["sop_uid"], c["sha256"], _text(c, "series_uid"),
            _text(c, "sop_class_uid"), _text(c, "transfer_syntax_uid"),
            _text(c, "instance_number"), c.get("rows"), c.get("columns"),
            _text(c, "number_of_frames"), int(c.get("size") or 0))


class CatalogStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def tables(self) -> Tables:
        return MESH_TABLES

    async def record_catalog_changes(
        self, node_id: str, changes: list[dict[str, Any]], checkpoint: int
    ) -> None:
        """Apply a page of ``node_id``'s change feed to the catalog (what it holds, with
        the keys C-FIND answers from) and remember how far the feed was read, in one
        transaction."""
        adds = [_catalog_row(node_id, c) for c in changes if c["kind"] == "add" and c["sha256"]]
        removes = [(node_id, c["sop_uid"]) for c in changes if c["kind"] == "remove"]
        keyed = [c for c in changes if c["kind"] == "add" and c.get("series_uid")]
        # One row per study and per series (INSERT OR IGNORE keeps the first one seen),
        # not one per instance of a page.
        studies = list({c["study_uid"]: c for c in reversed(keyed)}.values())
        series = list({c["series_uid"]: c for c in reversed(keyed)}.values())
        async with self._db.transaction() as conn:
            # A peer that has not yet applied a tombstone still lists the study.
            await conn.executemany(
                "INSERT INTO catalog (study_uid, node_id, sop_uid, sha256, series_uid,"
                " sop_class_uid, transfer_syntax_uid, instance_number, rows, columns,"
                " number_of_frames, size) SELECT ?,?,?,?,?,?,?,?,?,?,?,? WHERE NOT EXISTS"
                " (SELECT 1 FROM tombstones WHERE study_uid = ?)"
                " ON CONFLICT (study_uid, node_id, sop_uid) DO UPDATE SET"
                " sha256 = excluded.sha256, series_uid = excluded.series_uid,"
                " sop_class_uid = excluded.sop_class_uid,"
                " transfer_syntax_uid = excluded.transfer_syntax_uid,"
                " instance_number = excluded.instance_number, rows = excluded.rows,"
                " columns = excluded.columns,"
                " number_of_frames = excluded.number_of_frames, size = excluded.size",
                [(*row, row[0]) for row in adds],
            )
            await conn.executemany(
                "DELETE FROM catalog WHERE node_id = ? AND sop_uid = ?", removes
            )
            await conn.executemany(
                f"INSERT OR IGNORE INTO catalog_studies ({', '.join(_STUDY_KEYS)})"
                f" VALUES ({', '.join('?' * len(_STUDY_KEYS))})",
                [tuple(_text(c, k) for k in _STUDY_KEYS) for c in studies],
            )
            await conn.executemany(
                f"INSERT OR IGNORE INTO catalog_series ({', '.join(_SERIES_KEYS)})"
                f" VALUES ({', '.join('?' * len(_SERIES_KEYS))})",
                [tuple(_text(c, k) for k in _SERIES_KEYS) for c in series],
            )
            await conn.execute(
                UPSERT_STATE, ("catalog", node_id, json.dumps(checkpoint), time.time())
            )

    async def holders_of(self, sop_uids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """sop_uid -> [(member node id, sha256)] of the members the catalog says hold it."""
        held: dict[str, list[tuple[str, str]]] = {}
        for start in range(0, len(sop_uids), 500):  # SQLite's limit on parameters
            part = sop_uids[start:start + 500]
            rows = await self._db.fetchall(
                f"SELECT sop_uid, node_id, sha256 FROM catalog"
                f" WHERE sop_uid IN ({', '.join('?' * len(part))}) ORDER BY node_id", part,
            )
            for r in rows:
                held.setdefault(r["sop_uid"], []).append((r["node_id"], r["sha256"]))
        return held

    async def catalog_holds(self, node_id: str, sop_uids: list[str]) -> dict[str, str]:
        """sop_uid -> sha256 of those instances the catalog says ``node_id`` holds."""
        held: dict[str, str] = {}
        for start in range(0, len(sop_uids), 500):  # SQLite's limit on parameters
            part = sop_uids[start:start + 500]
            rows = await self._db.fetchall(
                f"SELECT sop_uid, sha256 FROM catalog WHERE node_id = ?"
                f" AND sop_uid IN ({', '.join('?' * len(part))})", [node_id, *part],
            )
            held.update((r["sop_uid"], r["sha256"]) for r in rows)
        return held

    async def study_holders(self, study_uid: str) -> dict[str, int]:
        """Member node id -> instances of the study it holds, as far as we know."""
        rows = await self._db.fetchall(
            "SELECT node_id, COUNT(*) AS n FROM catalog WHERE study_uid = ? GROUP BY node_id",
            (study_uid,),
        )
        return {r["node_id"]: int(r["n"]) for r in rows}
