"""flowtap engine: per-packet records -> flow table and meters -> Arrow flow records.

Modules: schema (the Arrow schema, single source of truth), engine (Engine, EngineConfig), replay
(capture files -> flow-record file), writer (Parquet / Arrow IPC), capture (capture-file reader).
"""
__version__ = "0.1.0"
