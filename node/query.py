"""C-FIND matching (DICOM PS3.4 C.2.2.2) as SQL over the index. Pure code, no I/O.

An identifier becomes a :class:`Query` (level, match conditions, return keys); the
query becomes one SQL statement; each result row becomes a response identifier.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


class QueryError(ValueError):
    """The identifier cannot be processed (maps to a C-FIND/C-GET/C-MOVE failure status)."""


@dataclass(frozen=True)
class Attr:
    level: str
    column: str  # SQL expression over aliases st (studies), se (series), i (instances)
    vr: str
    key: str = ""  # an indexed column of pn_key(column), for PN


# Attributes held in the index. Patient attributes live on the study rows.
ATTRS: dict[str, Attr] = {
    "PatientID": Attr("PATIENT", "st.patient_id", "LO"),
    "PatientName": Attr("PATIENT", "st.patient_name", "PN", key="st.patient_name_key"),
    "PatientBirthDate": Attr("PATIENT", "st.patient_birth_date", "DA"),
    "PatientSex": Attr("PATIENT", "st.patient_sex", "CS"),
    "StudyInstanceUID": Attr("STUDY", "st.study_uid", "UI"),
    "StudyDate": Attr("STUDY", "st.study_date", "DA"),
    "StudyTime": Attr("STUDY", "st.study_time", "TM"),
    "AccessionNumber": Attr("STUDY", "st.accession_number", "SH"),
    "StudyID": Attr("STUDY", "st.study_id", "SH"),
    "StudyDescription": Attr("STUDY", "st.study_description", "LO"),
    "ReferringPhysicianName": Attr("STUDY", "st.referring_physician_name", "PN"),
    "SeriesInstanceUID": Attr("SERIES", "se.series_uid", "UI"),
    "Modality": Attr("SERIES", "se.modality", "CS"),
    "SeriesNumber": Attr("SERIES", "se.series_number", "IS"),
    "SeriesDescription": Attr("SERIES", "se.series_description", "LO"),
    "SeriesDate": Attr("SERIES", "se.series_date", "DA"),
    "SeriesTime": Attr("SERIES", "se.series_time", "TM"),
    "BodyPartExamined": Attr("SERIES", "se.body_part_examined", "CS"),
    "SOPInstanceUID": Attr("IMAGE", "i.sop_uid", "UI"),
    "SOPClassUID": Attr("IMAGE", "i.sop_class_uid", "UI"),
    "InstanceNumber": Attr("IMAGE", "i.instance_number", "IS"),
    "Rows": Attr("IMAGE", "i.rows", "US"),
    "Columns": Attr("IMAGE", "i.columns", "US"),
    "NumberOfFrames": Attr("IMAGE", "i.number_of_frames", "IS"),
}

# Values computed per level: keyword -> (lowest level it is defined at, SQL expression).
def _count(rows: str) -> str:
    """COUNT(*) of ``rows`` (a FROM and WHERE). The inner SELECT with LIMIT -1 keeps
    SQLite from merging it into the aggregate: merged, a mesh view (a UNION ALL) cannot
    be flattened under an aggregate and is materialized whole for every row answered;
    kept apart, the view is flattened into it and each branch searches its index."""
    return f"(SELECT COUNT(*) FROM (SELECT 1 FROM {rows} LIMIT -1))"


_SERIES_OF_STUDY = "SELECT x.series_uid FROM {series} x WHERE x.study_uid = st.study_uid"
_STUDIES_OF_PATIENT = "SELECT s2.study_uid FROM {studies} s2 WHERE s2.patient_id = st.patient_id"
_PATIENT_STUDIES = _count("{studies} s2 WHERE s2.patient_id = st.patient_id")
_PATIENT_SERIES = _count(f"{{series}} x WHERE x.study_uid IN ({_STUDIES_OF_PATIENT})")
_PATIENT_INSTANCES = _count(
    "{instances} y WHERE y.series_uid IN (SELECT x.series_uid FROM {series} x"
    f" WHERE x.study_uid IN ({_STUDIES_OF_PATIENT}))"
)
_STUDY_SERIES = _count("{series} x WHERE x.study_uid = st.study_uid")
_STUDY_INSTANCES = _count(f"{{instances}} y WHERE y.series_uid IN ({_SERIES_OF_STUDY})")
_STUDY_MODALITIES = (
    "(SELECT group_concat(m, '\\') FROM (SELECT DISTINCT m FROM (SELECT x.modality AS m"
    " FROM {series} x WHERE x.study_uid = st.study_uid AND x.modality != '' LIMIT -1)"
    " ORDER BY m))"
)
_SERIES_INSTANCES = _count("{instances} y WHERE y.series_uid = se.series_uid")

COMPUTED: dict[str, tuple[str, str]] = {
    "NumberOfPatientRelatedStudies": ("PATIENT", _PATIENT_STUDIES),
    "NumberOfPatientRelatedSeries": ("PATIENT", _PATIENT_SERIES),
    "NumberOfPatientRelatedInstances": ("PATIENT", _PATIENT_INSTANCES),
    "NumberOfStudyRelatedSeries": ("STUDY", _STUDY_SERIES),
    "NumberOfStudyRelatedInstances": ("STUDY", _STUDY_INSTANCES),
    "ModalitiesInStudy": ("STUDY", _STUDY_MODALITIES),
    "NumberOfSeriesRelatedInstances": ("SERIES", _SERIES_INSTANCES),
}

# The unique key of each level, always returned.
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

# Keys a response never echoes as attributes of the matched entity.
_CONTROL_KEYWORDS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


@dataclass(frozen=True)
class Tables:
    """What the match SQL reads as studies, series and instances: this node's tables,
    or views with the same columns (the mesh's, in replication.catalog_store). Named
    in the statement itself, never wrapped in a CTE: SQLite would materialize a CTE
    that the statement reads more than once (the counts do), the whole catalog on
    every query, where a view is flattened and its branches use their indexes."""

    studies: str = "studies"
    series: str = "series"
    instances: str = "instances"

    def names(self) -> dict[str, str]:
        return {"studies": self.studies, "series": self.series, "instances": self.instances}


LOCAL_TABLES = Tables()

# The studies a query reads with each stored Patient ID presented as its current
# identity (node.patients keeps patient_current): a subquery in FROM, which SQLite
# flattens like a view. Only used once some patient event exists, so a node without
# an HL7 feed reads its tables (and their name index) as before.
_PRESENTED_STUDIES = (
    "(SELECT s.study_uid, COALESCE(p.current_id, s.patient_id) AS patient_id,"
    " COALESCE(p.patient_name, s.patient_name) AS patient_name,"
    " COALESCE(p.patient_birth_date, s.patient_birth_date) AS patient_birth_date,"
    " COALESCE(p.patient_sex, s.patient_sex) AS patient_sex,"
    " s.study_date, s.study_time, s.accession_number, s.study_id, s.study_description,"
    " s.referring_physician_name,"
    " CASE WHEN p.patient_name IS NULL THEN s.patient_name_key"
    " ELSE pn_key(p.patient_name) END AS patient_name_key, s.patient_id AS stored_patient_id"
    " FROM {base} s LEFT JOIN patient_current p ON p.patient_id = s.patient_id)"
)


def presented(tables: Tables) -> Tables:
    """``tables`` with patient attributes as patient events make them now (IHE PIR):
    a merged patient's studies are found under the survivor's ID, not the old one."""
    return Tables(_PRESENTED_STUDIES.format(base=tables.studies), tables.series,
                  tables.instances)


@dataclass
class Query:
    level: str
    conditions: list[tuple[str, list[Any]]] = field(default_factory=list)  # (SQL, params)
    return_keys: list[str] = field(default_factory=list)  # keywords, in request order
    unknown_keys: list[int] = field(default_factory=list)  # tags answered with empty values

    def sql(
        self, columns: Iterable[str] | None = None, tables: Tables | None = None
    ) -> tuple[str, list[Any]]:
        """Return the statement and parameters; one row per matching entity, read from
        ``tables`` (this node's own by default)."""
        tables = tables or LOCAL_TABLES
        selected = {k: _select_expr(k, self.level) for k in self.return_keys}
        unique = UNIQUE_KEY[self.level]
        selected.setdefault(unique, _select_expr(unique, self.level))
        if columns:
            for c in columns:
                selected[c] = c if "." in c else f"i.{c}"
        conditions = [*self.conditions, *_narrowing_below(self.level, self.conditions)]
        where = " AND ".join(c for c, _ in conditions) or "1"
        params = [p for _, ps in conditions for p in ps]
        if self.level == "PATIENT":
            select = ", ".join(f"{expr} AS \"{key}\"" for key, expr in selected.items())
            sql = (
                f"SELECT {select} FROM {{studies}} st WHERE {where} "
                "GROUP BY st.patient_id ORDER BY st.patient_id"
            )
            return sql.format_map(tables.names()), params
        sources, order = _FROM_AND_ORDER[self.level]
        # Sorted apart from the statement that matches, behind a MATERIALIZED fence: with
        # the ORDER BY on (or pushed back into) a join of mesh views, SQLite plans to
        # produce rows in that order and reads every instance the mesh holds, no term
        # pushed into the instances view.
        inner = ", ".join([*(f"{expr} AS \"{key}\"" for key, expr in selected.items()),
                           *(f"{expr} AS _o{n}" for n, expr in enumerate(order))])
        outer = ", ".join(f"\"{key}\"" for key in selected)
        sql = (f"WITH matched AS MATERIALIZED (SELECT {inner} FROM {sources} WHERE {where})"
               f" SELECT {outer} FROM matched"
               f" ORDER BY {', '.join(f'_o{n}' for n in range(len(order)))}")
        return sql.format_map(tables.names()), params


# What each level below PATIENT reads, and the order its rows are answered in.
_FROM_AND_ORDER: dict[str, tuple[str, tuple[str, ...]]] = {
    "STUDY": ("{studies} st", ("st.study_date", "st.study_uid")),
    "SERIES": ("{series} se JOIN {studies} st ON se.study_uid = st.study_uid",
               ("st.study_uid", "CAST(se.series_number AS INTEGER)", "se.series_uid")),
    "IMAGE": ("{instances} i JOIN {series} se ON i.series_uid = se.series_uid"
              " JOIN {studies} st ON se.study_uid = st.study_uid",
              ("st.study_uid", "se.series_uid", "CAST(i.instance_number AS INTEGER)",
               "i.sop_uid")),
}
_ALIAS_DEPTH = {"st": 0, "se": 1, "i": 2}


def _depth(condition: str) -> int:
    """0, 1, 2: the deepest of studies (st), series (se), instances (i) it reads."""
    return max((_ALIAS_DEPTH[a] for a in re.findall(r"\b(st|se|i)\.", condition)), default=0)


def _narrowing_below(level: str, conditions: list[tuple[str, list[Any]]]) -> list[
        tuple[str, list[Any]]]:
    """The conditions on studies (and series) again as a set of UIDs the rows below them
    must be in. Redundant over tables, where the join reaches the rows by index anyway;
    over views it is what lets SQLite push the restriction into the series and instances
    views (a join term cannot be pushed into a view, an uncorrelated IN can), instead of
    reading every instance the mesh holds. The subqueries' aliases are their own (st_,
    se_): with the outer ones reused, SQLite no longer pushes the term down."""
    if level not in ("SERIES", "IMAGE"):
        return []
    study = [c for c in conditions if _depth(c[0]) == 0]
    series = [c for c in conditions if _depth(c[0]) == 1]
    extra: list[tuple[str, list[Any]]] = []
    if study:
        where = " AND ".join(re.sub(r"\bst\.", "st_.", c) for c, _ in study)
        in_studies = (f"SELECT st_.study_uid FROM {{studies}} st_ WHERE {where}",
                      [p for _, ps in study for p in ps])
        extra.append((f"se.study_uid IN ({in_studies[0]})", in_studies[1]))
        series = [*series, (f"se.study_uid IN ({in_studies[0]})", in_studies[1])]
    if level == "IMAGE" and series:
        where = " AND ".join(re.sub(r"\bse\.", "se_.", c) for c, _ in series)
        extra.append((
            f"i.series_uid IN (SELECT se_.series_uid FROM {{series}} se_ WHERE {where})",
            [p for _, ps in series for p in ps]))
    return extra


def _select_expr(keyword: str, level: str) -> str:
    if keyword in ATTRS:
        return ATTRS[keyword].column
    return COMPUTED[keyword][1]


def _level_index(level: str) -> int:
    return LEVELS.index(level)


def _escape_glob(text: str) -> str:
    # GLOB treats [ ] specially; DICOM wildcards are only * and ?.
    return "".join("[[]" if c == "[" else "[]]" if c == "]" else c for c in text)


def _tm_bound(value: str, upper: bool) -> str:
    """Pad a partial DICOM time to HHMMSS.ffffff for comparison (see tm_norm)."""
    value = value.replace(":", "").strip()
    template = "235959.999999" if upper else "000000.000000"
    if "." not in value and len(value) > 6:
        value = value[:6]
    return value + template[len(value):]


def tm_norm(value: str | None) -> str | None:
    """SQLite function: a stored TM value as HHMMSS.ffffff, or None when empty."""
    if not value:
        return None
    return _tm_bound(value, upper=False)


def pn_fold(text: str) -> str:
    """A person name as PN matching compares it: case folded (PS3.4 C.2.2.2.1 allows
    case-insensitive PN matching) and accents dropped, over all of Unicode, as people
    type names any way: ``Müller``, ``MULLER`` and ``muller`` are one name, and
    ``João`` is found as ``JOAO``. Ideographic and phonetic characters stay as they are
    (NFKC first: full-width Latin letters become plain ones)."""
    if text.isascii():  # most names: nothing to normalize, and this runs per row
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare).casefold()


def pn_key(value: str | None) -> str | None:
    """SQLite function: the indexed form of a stored PN (migration v9), ``pn_fold`` of
    it; None for a name with component groups, which any group's query may match.
    Changing the folding means rebuilding the keys (a migration), or names are missed."""
    if value is None:
        return None
    folded = pn_fold(value)
    return None if "=" in folded else folded


def _pn_narrowing(key: str, folded_query: str) -> tuple[str, list[Any]] | None:
    """A condition on the name key that every name ``pn_match`` accepts meets, and that
    the key's index answers: the literal part before the first wildcard is a prefix of
    the folded name. None when the query starts with a wildcard."""
    literal = re.split(r"[*?]", folded_query, maxsplit=1)[0]
    if literal == folded_query:
        return f"({key} = ? OR {key} IS NULL)", [literal]
    if not literal or ord(literal[-1]) >= 0x10FFFF:
        return None
    upper = literal[:-1] + chr(ord(literal[-1]) + 1)
    return f"({key} >= ? AND {key} < ? OR {key} IS NULL)", [literal, upper]


@lru_cache(maxsize=256)
def _pn_pattern(folded: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in folded), re.DOTALL)


def pn_match(value: str | None, folded_query: str) -> bool:
    """SQLite function: whether a stored PN matches a query folded by ``pn_fold``, with
    ``*`` and ``?`` wildcards. A name stored with alphabetic, ideographic and phonetic
    groups (``Yamada^Tarou=山田^太郎=やまだ^たろう``) matches as a whole or by any group,
    so a query in any one of its character sets finds it."""
    if value is None:
        return False
    pattern = _pn_pattern(folded_query)
    folded = pn_fold(value)
    if pattern.fullmatch(folded):
        return True
    return "=" in folded and any(pattern.fullmatch(g) for g in folded.split("=") if g)


def _condition(attr: Attr, value: str) -> tuple[str, list[Any]]:
    col = attr.column
    if attr.vr == "UI":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        if len(uids) == 1:
            return f"{col} = ?", uids
        return f"{col} IN ({', '.join('?' * len(uids))})", uids
    if attr.vr in ("DA", "TM") and "-" in value:
        lo, _, hi = value.partition("-")
        lo, hi = lo.strip(), hi.strip()
        parts, params = [], []
        expr = f"tm_norm({col})" if attr.vr == "TM" else col
        parts.append(f"{col} != ''")
        if lo:
            parts.append(f"{expr} >= ?")
            params.append(_tm_bound(lo, False) if attr.vr == "TM" else lo)
        if hi:
            parts.append(f"{expr} <= ?")
            params.append(_tm_bound(hi, True) if attr.vr == "TM" else hi)
        return " AND ".join(parts), params
    if attr.vr == "TM":
        return f"tm_norm({col}) = ?", [_tm_bound(value, False)]
    if attr.vr == "US":
        try:
            return f"{col} = ?", [int(value)]
        except ValueError:
            raise QueryError(f"{value!r} is not a number") from None
    if attr.vr == "PN":
        # Case and accents folded on both sides, over all of Unicode (see pn_match).
        folded = pn_fold(value)
        narrowing = _pn_narrowing(attr.key, folded) if attr.key else None
        if narrowing is None:
            return f"pn_match({col}, ?)", [folded]
        return f"{narrowing[0]} AND pn_match({col}, ?)", [*narrowing[1], folded]
    target, text = col, value
    if "*" in value or "?" in value:
        return f"{target} GLOB ?", [_escape_glob(text)]
    return f"{target} = ?", [text]


def _value_text(elem_value: Any) -> str:
    if elem_value is None:
        return ""
    if isinstance(elem_value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in elem_value)
    return str(elem_value)


def parse_identifier(identifier: Dataset, model_root: str = "STUDY") -> Query:
    """Turn a C-FIND (or C-GET/C-MOVE) identifier into a :class:`Query`.

    ``model_root`` is ``"PATIENT"`` or ``"STUDY"``; Study Root has no PATIENT level.
    """
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {level or '(missing)'!r} is not one of {LEVELS}")
    if model_root == "STUDY" and level == "PATIENT":
        raise QueryError("Study Root information model has no PATIENT level")
    query = Query(level=level)
    depth = _level_index(level)
    for elem in identifier:
        if elem.tag.group == 0x0002:
            continue
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if keyword in _CONTROL_KEYWORDS:
            continue
        if elem.VR == "SQ":
            query.unknown_keys.append(int(elem.tag))
            continue
        attr = ATTRS.get(keyword)
        if attr is None:
            computed = COMPUTED.get(keyword)
            # Counts are answered at their own level; ModalitiesInStudy also below it.
            if computed and (
                computed[0] == level
                or (keyword == "ModalitiesInStudy" and _level_index(computed[0]) <= depth)
            ):
                if keyword == "ModalitiesInStudy" and elem.value:
                    mods = [m for m in _value_text(elem.value).split("\\") if m]
                    query.conditions.append((
                        "EXISTS (SELECT 1 FROM {series} x WHERE x.study_uid = st.study_uid"
                        f" AND x.modality IN ({', '.join('?' * len(mods))}))",
                        mods,
                    ))
                query.return_keys.append(keyword)
            else:
                query.unknown_keys.append(int(elem.tag))
            continue
        if _level_index(attr.level) > depth:
            # A key below the query level cannot be matched (PS3.4 C.2.2.1.2).
            query.unknown_keys.append(int(elem.tag))
            continue
        query.return_keys.append(keyword)
        value = _value_text(elem.value).strip()
        if value and value != "*":
            query.conditions.append(_condition(attr, value))
    return query


def response_identifier(query: Query, row: Mapping[str, Any], retrieve_aet: str) -> Dataset:
    """Build one C-FIND response identifier from a result row."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = query.level
    keys = list(query.return_keys)
    if UNIQUE_KEY[query.level] not in keys:
        keys.append(UNIQUE_KEY[query.level])
    for keyword in keys:
        value = row.get(keyword)
        setattr(ds, keyword, "" if value is None else value)
    for tag in query.unknown_keys:
        keyword = keyword_for_tag(tag)
        if keyword == "RetrieveAETitle":
            ds.RetrieveAETitle = retrieve_aet
        elif keyword == "InstanceAvailability":
            ds.InstanceAvailability = "ONLINE"
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue  # private or unknown tags are not answered
            ds.add_new(tag, vr, [] if vr == "SQ" else None)
    return ds
