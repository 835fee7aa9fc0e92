"""The schema is defined once (dpi/schema.py); docs/schema.md is generated from it and must not go stale."""
import pathlib

import pyarrow as pa

from dpi import schema

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_schema_page_is_current():
    page = (ROOT / "docs" / "schema.md").read_text()
    assert page == schema.markdown(), "regenerate with: python -m dpi.schema > docs/schema.md"


def test_every_column_documented_and_conventions_hold():
    s = schema.flow_schema()
    assert len(set(s.names)) == len(s.names)
    for c in schema.COLUMNS:
        f = s.field(c.name)
        assert f.metadata[b"doc"] and c.name == c.name.lower()
        if c.kind == "counter":
            assert not f.nullable, f"counter {c.name} must never be null"
        if pa.types.is_timestamp(c.type):
            assert c.type.unit == "ns" and c.type.tz == "UTC"
        if c.name.endswith("_ns"):
            assert c.unit == "ns"
    assert s.metadata[b"flowtap.schema_version"] == schema.SCHEMA_VERSION.encode()
