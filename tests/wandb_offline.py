"""Reading what an offline W&B run logged (tests only): W&B writes no summary file for
offline runs, so its ``run-<id>.wandb`` transaction log is decoded here."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_BLOCK = 32768  # the .wandb transaction log is a LevelDB-style log of 32 KiB blocks
_HEADER = struct.Struct("<IHB")  # checksum, length, record type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _log_records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    records, pending, pos = [], b"", 7
    while pos + _HEADER.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER.size:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = _HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + _HEADER.size: pos + _HEADER.size + length]
        pos += _HEADER.size + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
    return records


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """{"id", "config", "history" (one dict per log call), "summary"} of an offline run folder
    (``output_dir/wandb/offline-run-*``), decoded from its ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no run-*.wandb file")
    out: dict[str, Any] = {"id": None, "config": {}, "history": [], "summary": {}}

    def key_of(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    for raw in _log_records(files[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["id"] = record.run.run_id
            for item in record.run.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({key_of(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][key_of(item)] = json.loads(item.value_json)
    return out
