"""An offline W&B run read back from its files (no network): the config, the defined
summaries, the image keys, the group and job type, and the labeled split as an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import TrainedRun

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def records(path: Path):
    """The protobuf records of a W&B run file (.wandb): a 7-byte header, then LevelDB-style log
    blocks of 32 KiB, each record a 7-byte header (crc, length, type) and its payload."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block = path.read_bytes(), 7, 32768
    parts: list[bytes] = []
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if left < 7 or kind == 0:  # block trailer or padding
            pos += left
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        parts = [payload] if kind in (1, 2) else [*parts, payload]
        if kind in (1, 4):  # a whole record, or the last piece of one
            # the pb2 module re-exports a protoc module picked at run time: mypy sees no Record
            record = pb.Record()  # type: ignore[attr-defined]
            record.ParseFromString(b"".join(parts))
            yield record


def read_offline_run(run_dir: Path) -> dict:
    """What the run file holds: config keys, summaries defined, history keys, run group and
    job type, artifact types."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    out: dict = {"config": {}, "summaries": {}, "history": set(), "artifacts": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["job_type"] = record.run.run_group, record.run.job_type
            out["tags"] = list(record.run.tags)
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "metric" and record.metric.name:
            out["summaries"][record.metric.name] = record.metric.summary
        elif kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in record.history.item}
        elif kind == "artifact":
            out["artifacts"].append(record.artifact.type)
    return out


def test_offline_wandb_run_holds_config_summaries_images_and_split(
    tiny_wandb_run: TrainedRun,
) -> None:
    found = read_offline_run(tiny_wandb_run.path)
    assert found["config"]["model"]["arch"] == "drmm2" and "data" in found["config"]
    assert found["group"] == "default" and found["job_type"] == "train/semi_sup"
    assert "preset:default" in found["tags"]
    assert found["summaries"]["val/acc"].max and found["summaries"]["test/error"].last
    assert found["summaries"]["val/reconstruction"].min
    assert any(k.startswith("images/reconstructions") for k in found["history"])
    assert "labeled-split" in found["artifacts"]
