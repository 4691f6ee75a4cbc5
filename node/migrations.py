"""The index's schema: one ordered list of migrations for the one SQLite file.

SQLite keeps a single ``user_version`` per database, so node and replication share one
list; each entry says which package owns the tables it creates, so a reader knows whose
code reads and writes them. Node opens the database and runs the list; it never reads
what replication owns except through the seams ``node.app`` fills in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Owner = Literal["node", "replication"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema upgrade; ``sql`` may hold several statements (and trigger bodies)."""

    owner: Owner
    sql: str


# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("node", """
    CREATE TABLE studies (
        study_uid TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL DEFAULT '',
        patient_name TEXT NOT NULL DEFAULT '',
        patient_birth_date TEXT NOT NULL DEFAULT '',
        patient_sex TEXT NOT NULL DEFAULT '',
        study_date TEXT NOT NULL DEFAULT '',
        study_time TEXT NOT NULL DEFAULT '',
        accession_number TEXT NOT NULL DEFAULT '',
        study_id TEXT NOT NULL DEFAULT '',
        study_description TEXT NOT NULL DEFAULT '',
        referring_physician_name TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE INDEX studies_patient ON studies(patient_id);
    CREATE INDEX studies_date ON studies(study_date);
    CREATE INDEX studies_accession ON studies(accession_number);
    CREATE TABLE series (
        series_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL REFERENCES studies(study_uid),
        modality TEXT NOT NULL DEFAULT '',
        series_number TEXT NOT NULL DEFAULT '',
        series_description TEXT NOT NULL DEFAULT '',
        series_date TEXT NOT NULL DEFAULT '',
        series_time TEXT NOT NULL DEFAULT '',
        body_part_examined TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX series_study ON series(study_uid);
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE instances (
        sop_uid TEXT PRIMARY KEY,
        series_uid TEXT NOT NULL REFERENCES series(series_uid),
        sop_class_uid TEXT NOT NULL,
        transfer_syntax_uid TEXT NOT NULL,
        instance_number TEXT NOT NULL DEFAULT '',
        rows INTEGER,
        columns INTEGER,
        number_of_frames TEXT NOT NULL DEFAULT '',
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        source_aet TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL,
        seq INTEGER NOT NULL UNIQUE REFERENCES changes(seq)
    );
    CREATE INDEX instances_series ON instances(series_uid);
    CREATE INDEX instances_sha ON instances(sha256);
    CREATE TABLE conflicts (
        id INTEGER PRIMARY KEY,
        sop_uid TEXT NOT NULL,
        stored_sha256 TEXT NOT NULL,
        received_sha256 TEXT NOT NULL,
        received_size INTEGER NOT NULL,
        kept_copy INTEGER NOT NULL,
        source_aet TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL
    );
    """),
    # v2: small documents other parts of the node keep across restarts (e.g. last-known
    # peer addresses), by namespace and key. The index stays ignorant of what they mean.
    Migration("node", """
    CREATE TABLE state (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    );
    """),
    # v3: replication's outbox, one row per (instance, target node) until acknowledged.
    Migration("replication", """
    CREATE TABLE outbox (
        sop_uid TEXT NOT NULL,
        target TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (sop_uid, target)
    );
    CREATE INDEX outbox_due ON outbox(next_try);
    """),
    # v4: the mesh catalog: which member holds which instance, learned from change feeds.
    Migration("replication", """
    CREATE TABLE catalog (
        study_uid TEXT NOT NULL,
        node_id TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (study_uid, node_id, sop_uid)
    );
    CREATE INDEX catalog_node ON catalog(node_id);
    """),
    # v5: studies deleted mesh-wide, one signed tombstone each (the document is kept as
    # it spreads), with this node's audit of applying it: when, and what it removed.
    Migration("replication", """
    CREATE TABLE tombstones (
        study_uid TEXT PRIMARY KEY,
        sig TEXT NOT NULL,
        deleted_by TEXT NOT NULL,
        deleted_at REAL NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        document TEXT NOT NULL,
        received_from TEXT NOT NULL,
        applied_at REAL NOT NULL,
        instances_removed INTEGER NOT NULL DEFAULT 0,
        bytes_removed INTEGER NOT NULL DEFAULT 0
    );
    """),
    # v6: one INSERT records a stored instance (study, series, change, instance rows),
    # so an ingest costs one hand-off to the database thread instead of seven; a study
    # deleted mesh-wide is refused inside that statement.
    Migration("node", """
    CREATE VIEW ingest AS SELECT
        '' AS study_uid, '' AS patient_id, '' AS patient_name, '' AS patient_birth_date,
        '' AS patient_sex, '' AS study_date, '' AS study_time, '' AS accession_number,
        '' AS study_id, '' AS study_description, '' AS referring_physician_name,
        '' AS series_uid, '' AS modality, '' AS series_number, '' AS series_description,
        '' AS series_date, '' AS series_time, '' AS body_part_examined,
        '' AS sop_uid, '' AS sop_class_uid, '' AS transfer_syntax_uid,
        '' AS instance_number, 0 AS rows, 0 AS columns, '' AS number_of_frames,
        '' AS sha256, 0 AS size, '' AS source_aet, 0.0 AS received_at
    WHERE 0;
    CREATE TRIGGER ingest_insert INSTEAD OF INSERT ON ingest BEGIN
        SELECT RAISE(ABORT, 'study deleted (tombstone)')
        WHERE EXISTS (SELECT 1 FROM tombstones WHERE study_uid = NEW.study_uid);
        INSERT OR IGNORE INTO studies (study_uid, patient_id, patient_name,
            patient_birth_date, patient_sex, study_date, study_time, accession_number,
            study_id, study_description, referring_physician_name, created_at)
        VALUES (NEW.study_uid, NEW.patient_id, NEW.patient_name, NEW.patient_birth_date,
            NEW.patient_sex, NEW.study_date, NEW.study_time, NEW.accession_number,
            NEW.study_id, NEW.study_description, NEW.referring_physician_name,
            NEW.received_at);
        INSERT OR IGNORE INTO series (series_uid, study_uid, modality, series_number,
            series_description, series_date, series_time, body_part_examined)
        VALUES (NEW.series_uid, NEW.study_uid, NEW.modality, NEW.series_number,
            NEW.series_description, NEW.series_date, NEW.series_time,
            NEW.body_part_examined);
        INSERT INTO changes (kind, sop_uid, study_uid, at)
        VALUES ('add', NEW.sop_uid, NEW.study_uid, NEW.received_at);
        INSERT INTO instances (sop_uid, series_uid, sop_class_uid, transfer_syntax_uid,
            instance_number, rows, columns, number_of_frames, sha256, size, source_aet,
            received_at, seq)
        VALUES (NEW.sop_uid, NEW.series_uid, NEW.sop_class_uid, NEW.transfer_syntax_uid,
            NEW.instance_number, NEW.rows, NEW.columns, NEW.number_of_frames, NEW.sha256,
            NEW.size, NEW.source_aet, NEW.received_at,
            (SELECT max(seq) FROM changes));
    END;
    """),
    # v7: the catalog carries what C-FIND needs (patient, study and series keys on their
    # own tables, instance keys on its rows), so any node answers for studies held
    # anywhere; mesh_* views are this node's holdings plus the catalog's for the rest,
    # one row per entity. Fetched copies kept in the cache are listed in cache_use. The
    # catalog's feed checkpoints are reset so the new keys are read in again.
    Migration("replication", """
    ALTER TABLE catalog ADD COLUMN series_uid TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN sop_class_uid TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN transfer_syntax_uid TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN instance_number TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN rows INTEGER;
    ALTER TABLE catalog ADD COLUMN columns INTEGER;
    ALTER TABLE catalog ADD COLUMN number_of_frames TEXT NOT NULL DEFAULT '';
    ALTER TABLE catalog ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX catalog_sop ON catalog(sop_uid);
    CREATE TABLE catalog_studies (
        study_uid TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL DEFAULT '',
        patient_name TEXT NOT NULL DEFAULT '',
        patient_birth_date TEXT NOT NULL DEFAULT '',
        patient_sex TEXT NOT NULL DEFAULT '',
        study_date TEXT NOT NULL DEFAULT '',
        study_time TEXT NOT NULL DEFAULT '',
        accession_number TEXT NOT NULL DEFAULT '',
        study_id TEXT NOT NULL DEFAULT '',
        study_description TEXT NOT NULL DEFAULT '',
        referring_physician_name TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE catalog_series (
        series_uid TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        modality TEXT NOT NULL DEFAULT '',
        series_number TEXT NOT NULL DEFAULT '',
        series_description TEXT NOT NULL DEFAULT '',
        series_date TEXT NOT NULL DEFAULT '',
        series_time TEXT NOT NULL DEFAULT '',
        body_part_examined TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX catalog_series_study ON catalog_series(study_uid);
    CREATE VIEW mesh_studies AS
        SELECT study_uid, patient_id, patient_name, patient_birth_date, patient_sex,
            study_date, study_time, accession_number, study_id, study_description,
            referring_physician_name FROM studies
        UNION ALL
        SELECT c.study_uid, c.patient_id, c.patient_name, c.patient_birth_date,
            c.patient_sex, c.study_date, c.study_time, c.accession_number, c.study_id,
            c.study_description, c.referring_physician_name FROM catalog_studies c
        WHERE NOT EXISTS (SELECT 1 FROM studies s WHERE s.study_uid = c.study_uid)
            AND EXISTS (SELECT 1 FROM catalog k WHERE k.study_uid = c.study_uid);
    CREATE VIEW mesh_series AS
        SELECT series_uid, study_uid, modality, series_number, series_description,
            series_date, series_time, body_part_examined FROM series
        UNION ALL
        SELECT c.series_uid, c.study_uid, c.modality, c.series_number,
            c.series_description, c.series_date, c.series_time, c.body_part_examined
        FROM catalog_series c
        WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.series_uid = c.series_uid)
            AND EXISTS (SELECT 1 FROM catalog k WHERE k.study_uid = c.study_uid
                        AND k.series_uid = c.series_uid);
    CREATE VIEW mesh_instances AS
        SELECT sop_uid, series_uid, sop_class_uid, transfer_syntax_uid, instance_number,
            rows, columns, number_of_frames, sha256, size, 1 AS local FROM instances
        UNION ALL
        SELECT c.sop_uid, c.series_uid, c.sop_class_uid, c.transfer_syntax_uid,
            c.instance_number, c.rows, c.columns, c.number_of_frames, c.sha256, c.size,
            0 AS local FROM catalog c
        WHERE c.series_uid != ''
            AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.sop_uid = c.sop_uid)
        GROUP BY c.sop_uid;
    CREATE TABLE cache_use (
        sop_uid TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        size INTEGER NOT NULL,
        last_used REAL NOT NULL
    );
    DELETE FROM state WHERE namespace = 'catalog';
    """),
    # v8: the audit trail (append-only: the triggers refuse any change to a row, so
    # no code path, bug or hand-typed SQL can rewrite history) and HTTP bearer tokens,
    # kept as SHA-256 digests only.
    Migration("node", """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        user TEXT NOT NULL DEFAULT '',
        calling_aet TEXT NOT NULL DEFAULT '',
        node_id TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        patient_id TEXT NOT NULL DEFAULT '',
        study_uid TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_at ON audit(at);
    CREATE INDEX audit_study ON audit(study_uid);
    CREATE INDEX audit_patient ON audit(patient_id);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
    CREATE TABLE http_tokens (
        id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """),
    # v9: each study's patient name as PN matching compares it (node.query.pn_key:
    # folded; NULL for names with component groups, which match by any group), indexed,
    # so C-FIND by name reads a range of the index instead of folding every row. Kept
    # by triggers, so every writer of studies keeps it, and filled for the rows there.
    Migration("node", """
    ALTER TABLE studies ADD COLUMN patient_name_key TEXT;
    UPDATE studies SET patient_name_key = pn_key(patient_name);
    CREATE INDEX studies_name_key ON studies(patient_name_key);
    CREATE TRIGGER studies_name_key_insert AFTER INSERT ON studies BEGIN
        UPDATE studies SET patient_name_key = pn_key(NEW.patient_name)
        WHERE study_uid = NEW.study_uid;
    END;
    CREATE TRIGGER studies_name_key_update AFTER UPDATE OF patient_name ON studies BEGIN
        UPDATE studies SET patient_name_key = pn_key(NEW.patient_name)
        WHERE study_uid = NEW.study_uid;
    END;
    """),
    # v10: the catalog indexed for what C-FIND filters on (as studies is), and the mesh_*
    # views rewritten so SQLite flattens them into the statement that reads them: no
    # GROUP BY in mesh_instances (an instance held by several members is listed once,
    # by its lowest member id, through an index), the name key in mesh_studies;
    # mesh_series stays as v7 made it.
    Migration("replication", """
    ALTER TABLE catalog_studies ADD COLUMN patient_name_key TEXT;
    UPDATE catalog_studies SET patient_name_key = pn_key(patient_name);
    CREATE INDEX catalog_studies_name_key ON catalog_studies(patient_name_key);
    CREATE INDEX catalog_studies_patient ON catalog_studies(patient_id);
    CREATE INDEX catalog_studies_date ON catalog_studies(study_date);
    CREATE INDEX catalog_studies_accession ON catalog_studies(accession_number);
    CREATE TRIGGER catalog_studies_name_key_insert AFTER INSERT ON catalog_studies BEGIN
        UPDATE catalog_studies SET patient_name_key = pn_key(NEW.patient_name)
        WHERE study_uid = NEW.study_uid;
    END;
    CREATE TRIGGER catalog_studies_name_key_update AFTER UPDATE OF patient_name
    ON catalog_studies BEGIN
        UPDATE catalog_studies SET patient_name_key = pn_key(NEW.patient_name)
        WHERE study_uid = NEW.study_uid;
    END;
    DROP INDEX catalog_sop;
    CREATE INDEX catalog_sop ON catalog(sop_uid, node_id);
    CREATE INDEX catalog_series_uid ON catalog(series_uid);
    DROP VIEW mesh_studies;
    DROP VIEW mesh_instances;
    CREATE VIEW mesh_studies AS
        SELECT study_uid, patient_id, patient_name, patient_birth_date, patient_sex,
            study_date, study_time, accession_number, study_id, study_description,
            referring_physician_name, patient_name_key FROM studies
        UNION ALL
        SELECT c.study_uid, c.patient_id, c.patient_name, c.patient_birth_date,
            c.patient_sex, c.study_date, c.study_time, c.accession_number, c.study_id,
            c.study_description, c.referring_physician_name, c.patient_name_key
        FROM catalog_studies c
        WHERE NOT EXISTS (SELECT 1 FROM studies s WHERE s.study_uid = c.study_uid)
            AND EXISTS (SELECT 1 FROM catalog k WHERE k.study_uid = c.study_uid);
    CREATE VIEW mesh_instances AS
        SELECT sop_uid, series_uid, sop_class_uid, transfer_syntax_uid, instance_number,
            rows, columns, number_of_frames, sha256, size, 1 AS local FROM instances
        UNION ALL
        SELECT c.sop_uid, c.series_uid, c.sop_class_uid, c.transfer_syntax_uid,
            c.instance_number, c.rows, c.columns, c.number_of_frames, c.sha256, c.size,
            0 AS local FROM catalog c
        WHERE c.series_uid != ''
            AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.sop_uid = c.sop_uid)
            AND NOT EXISTS (SELECT 1 FROM catalog d WHERE d.sop_uid = c.sop_uid
                            AND d.node_id < c.node_id);
    """),
    # v11: storage commitment requests waiting for their instances to be safe (they
    # survive restarts: the N-EVENT-REPORT is owed until sent or given up), and MPPS
    # instances with their links to the scheduled steps they performed.
    Migration("node", """
    CREATE TABLE commitments (
        transaction_uid TEXT NOT NULL,
        requester TEXT NOT NULL,
        items TEXT NOT NULL,
        received_at REAL NOT NULL,
        deadline REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'waiting',
        report TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (requester, transaction_uid)
    );
    CREATE INDEX commitments_state ON commitments(state);
    CREATE TABLE mpps (
        sop_uid TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        calling_aet TEXT NOT NULL DEFAULT '',
        attributes BLOB NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE mpps_steps (
        mpps_uid TEXT NOT NULL REFERENCES mpps(sop_uid),
        accession_number TEXT NOT NULL DEFAULT '',
        requested_procedure_id TEXT NOT NULL DEFAULT '',
        scheduled_step_id TEXT NOT NULL DEFAULT '',
        study_uid TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX mpps_steps_mpps ON mpps_steps(mpps_uid);
    CREATE INDEX mpps_steps_accession ON mpps_steps(accession_number);
    """),
    # v12: patient events (IHE PIR, node.patients): every accepted ADT message, immutable,
    # and what they make of each stored Patient ID now, kept current by node.patients.
    # patient_current holds only the IDs some event touches; NULL: the stored value
    # stands. Stored files and the study rows are never rewritten.
    Migration("node", """
    CREATE TABLE patient_events (
        event_id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        document TEXT NOT NULL,
        origin TEXT NOT NULL DEFAULT '',
        received_from TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL
    );
    CREATE INDEX patient_events_order ON patient_events(at, event_id);
    CREATE TRIGGER patient_events_immutable BEFORE UPDATE ON patient_events BEGIN
        SELECT RAISE(ABORT, 'patient events are immutable');
    END;
    CREATE TABLE patient_current (
        patient_id TEXT PRIMARY KEY,
        current_id TEXT NOT NULL,
        current_issuer TEXT NOT NULL DEFAULT '',
        patient_name TEXT,
        patient_birth_date TEXT,
        patient_sex TEXT,
        merged INTEGER NOT NULL DEFAULT 0
    );
    """),
    # v13: browser sessions (node.http.session_store): a cookie's SHA-256, the token it was
    # exchanged for (revoking the token ends its sessions) and when it expires.
    Migration("node", """
    CREATE TABLE http_sessions (
        sha256 TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX http_sessions_expiry ON http_sessions(expires_at);
    """),
    # v14: order events (IHE Scheduled Workflow, node.worklist): every accepted ORM/OMI
    # order message, immutable, and the worklist item each accession's events make now,
    # rewritten by node.worklist.store in the transaction that adds an event.
    Migration("node", """
    CREATE TABLE order_events (
        event_id TEXT PRIMARY KEY,
        accession TEXT NOT NULL,
        at TEXT NOT NULL,
        document TEXT NOT NULL,
        origin TEXT NOT NULL DEFAULT '',
        received_from TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL
    );
    CREATE INDEX order_events_order ON order_events(at, event_id);
    CREATE INDEX order_events_accession ON order_events(accession);
    CREATE TRIGGER order_events_immutable BEFORE UPDATE ON order_events BEGIN
        SELECT RAISE(ABORT, 'order events are immutable');
    END;
    CREATE TABLE worklist_items (
        accession TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL,
        patient_issuer TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        document TEXT NOT NULL
    );
    CREATE INDEX worklist_items_patient ON worklist_items(patient_id);
    """),
)
SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> Iterator[str]:
    """The statements of a migration; a trigger's body holds semicolons of its own."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
