"""The columnar form of patient records, shared by the SQL engines (DuckDB: engine/engines/duckdb/columnar.py
loads it; Spark: engine/engines/spark/tables.py): the four tables' columns and a record's rows.

    patients      one row per patient               pid, nhs_number, birth_date, sex, practice, ...
    facts         one row per fact                  pid, seq, fid, kind, system, code, start, end,
                                                    value, unit, status, source_system, care_setting, ...
    fact_codings  extra codings of a fact           pid, seq, role ('code' = codes[1:], 'value_code'), pos, system, code
    fact_attrs    a fact's setting-specific extras  pid, seq, key, form, sval, nval, vtype, csys, ccode

(What each column means: engine/engines/duckdb/columnar.py.)
"""
from __future__ import annotations

from engine.records.model import PatientRecord, canonical_system

NULL = "\\N"

SCHEMA: dict[str, dict[str, str]] = {
    "patients": {
        "pid": "INTEGER", "nhs_number": "VARCHAR", "birth_date": "DATE", "sex": "VARCHAR", "practice": "VARCHAR",
        "locality": "VARCHAR", "mdt": "VARCHAR", "death_date": "DATE", "registered_on": "DATE",
    },
    "facts": {
        "pid": "INTEGER", "seq": "INTEGER", "fid": "VARCHAR", "kind": "VARCHAR", "system": "VARCHAR", "code": "VARCHAR",
        "start": "TIMESTAMP", "end": "TIMESTAMP", "value": "DOUBLE", "unit": "VARCHAR", "status": "VARCHAR",
        "source_system": "VARCHAR", "care_setting": "VARCHAR", "exception_type": "VARCHAR",
    },
    "fact_codings": {"pid": "INTEGER", "seq": "INTEGER", "role": "VARCHAR", "pos": "INTEGER", "system": "VARCHAR",
                     "code": "VARCHAR"},
    "fact_attrs": {
        "pid": "INTEGER", "seq": "INTEGER", "key": "VARCHAR", "form": "VARCHAR", "sval": "VARCHAR", "nval": "DOUBLE",
        "vtype": "VARCHAR", "csys": "VARCHAR", "ccode": "VARCHAR",
    },
}
TABLES = tuple(SCHEMA)
RESULT_KEYS = ("value_string", "value_text", "value_boolean")  # attrs derive.result_text reads


def _cell(v):
    if v is None:
        return NULL
    if isinstance(v, float):
        return repr(v)
    return v


def patient_row(pid: int, rec: PatientRecord) -> tuple:
    p = rec.patient
    return (pid, p.nhs_number, p.birth_date.isoformat(), p.sex.value, p.practice, p.locality, p.mdt,
            p.death_date.isoformat() if p.death_date else None,
            p.registered_on.isoformat() if p.registered_on else None)


def attr_rows(pid: int, seq: int, attrs: dict) -> list[tuple]:
    """A fact's attrs in the two shapes derive.Deriver._field_matches reads them in."""
    out = []
    for key, raw in attrs.items():
        values = raw if isinstance(raw, list) else [raw]
        for v in values:
            v = v.get("code") if isinstance(v, dict) else v
            if isinstance(v, bool):
                v = str(v).lower()
            if v is None:
                continue
            if isinstance(v, str):
                out.append((pid, seq, key, "c", v, None, "s", None, None))
            elif isinstance(v, (int, float)):
                out.append((pid, seq, key, "c", None, float(v), "n", None, None))
            else:
                out.append((pid, seq, key, "c", None, None, "o", None, None))
        items = raw if isinstance(raw, list) else [raw] if raw else []
        for c in items:
            if isinstance(c, dict):
                code = c.get("code")
                if not isinstance(code, str) or not code.strip():
                    continue
                out.append((pid, seq, key, "v", None, None, None, canonical_system(c.get("system")), code.strip()))
            else:
                code = str(c).strip()
                if code:
                    out.append((pid, seq, key, "v", None, None, None, "", code))
        if key in RESULT_KEYS:
            out.append((pid, seq, key, "r", str(raw) if raw else None, None, None, None,
                        ("true" if raw else "false") if isinstance(raw, bool) else None))
    return out


def record_rows(pid: int, rec: PatientRecord):
    """(patient row, fact rows, coding rows, attr rows) for one record."""
    facts, codings, attrs = [], [], []
    for seq, f in enumerate(rec.facts):
        first = f.codes[0]
        facts.append((pid, seq, f.id, f.kind.value, first.system, first.code, f.start.isoformat(sep=" "),
                      f.end.isoformat(sep=" ") if f.end else None, f.value, f.unit, f.status, f.source_system,
                      f.care_setting.value, f.exception_type.value if f.exception_type else None))
        for i, c in enumerate(f.codes[1:], start=1):
            codings.append((pid, seq, "code", i, c.system, c.code))
        for i, c in enumerate(f.value_codes):
            codings.append((pid, seq, "value_code", i, c.system, c.code))
        if f.attrs:
            attrs.extend(attr_rows(pid, seq, f.attrs))
    return patient_row(pid, rec), facts, codings, attrs
