"""Datasets laid out the way LeRobot's own writer does it: many episodes per file.

The copy is repacked so all episodes share one data parquet (variable-length list columns),
one mp4 per camera (episode e starts at from_timestamp = e * length / fps), one metadata file
without the meta/episodes pointer columns, and a tasks.parquet whose task strings are pandas'
unnamed '__index_level_0__' index. Reader, validator and resuming writer must follow the
metadata pointers, not armstack's own one-file-per-episode choice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from armstack_recorder import layout
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader, LeRobotDatasetWriter
from armstack_recorder.validate import validate_dataset
from armstack_recorder.video import StreamingEncoder, VideoConfig

EPISODES, FRAMES, FPS = 3, 40, 30
KEYS = ("observation.images.top", "observation.images.wrist")


def _as_variable_lists(table: pa.Table) -> pa.Table:
    for i, f in enumerate(table.schema):
        if pa.types.is_fixed_size_list(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.list_(f.type.value_type)))
    return table


def _lerobot_tasks_table(tasks: list[str]) -> pa.Table:
    pandas_meta = {"index_columns": ["__index_level_0__"], "column_indexes": [],
                   "columns": [{"name": "task_index", "field_name": "task_index",
                                "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                               {"name": None, "field_name": "__index_level_0__",
                                "pandas_type": "unicode", "numpy_type": "object",
                                "metadata": None}]}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks)})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _repack(root: Path, synthetic) -> None:
    rows = pq.read_table(root / "meta/episodes").to_pylist()
    rows.sort(key=lambda r: r["episode_index"])
    data = pa.concat_tables([pq.read_table(root / f"data/chunk-000/file-{e:03d}.parquet")
                             for e in range(EPISODES)])
    shutil.rmtree(root / "data")
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(_as_variable_lists(data), root / "data/chunk-000/file-000.parquet")
    for cam_id, key in enumerate(KEYS):
        shutil.rmtree(root / "videos" / key)
        enc = StreamingEncoder(root / f"videos/{key}/chunk-000/file-000.mp4", width=128, height=96,
                               fps=FPS, config=VideoConfig(codec="libx264"), queue_size=16)
        for e in range(EPISODES):
            for k in range(FRAMES):
                enc.put(synthetic.image(k, e, cam_id))
        enc.finish()
    for row in rows:
        e = row["episode_index"]
        row.pop("meta/episodes/chunk_index")
        row.pop("meta/episodes/file_index")
        row["data/file_index"] = 0
        for key in KEYS:
            row[f"videos/{key}/file_index"] = 0
            row[f"videos/{key}/from_timestamp"] = e * FRAMES / FPS
            row[f"videos/{key}/to_timestamp"] = (e + 1) * FRAMES / FPS
    shutil.rmtree(root / "meta/episodes")
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(_lerobot_tasks_table(["put the cube in the bin"]), root / layout.TASKS_PATH)


def test_packed_dataset_reads_validates_and_resumes(written_dataset: Path, tmp_path: Path,
                                                    synthetic) -> None:
    root = tmp_path / "packed"
    shutil.copytree(written_dataset, root)
    _repack(root, synthetic)

    reader = LeRobotDatasetReader(root)
    assert reader.tasks == ["put the cube in the bin"]
    assert reader.episode(2).videos[KEYS[0]].from_timestamp == 2 * FRAMES / FPS
    for index in (0, 41, 80, 119):
        e, k = divmod(index, FRAMES)
        item = reader.frame(index)
        np.testing.assert_array_equal(item["observation.state"], synthetic.state(e, k))
        assert [synthetic.read(item[key]) for key in KEYS] == [(k, e, 0), (k, e, 1)]
    report = validate_dataset(root)
    assert report.ok and not report.warnings, report.format()

    # resuming starts new files after the packed ones, as LeRobot does
    with LeRobotDatasetWriter(synthetic.config(root)) as writer:
        synthetic.record(writer, 3, 8)
        saved = writer.save_episode()
    assert saved.data_path == root / "data/chunk-000/file-001.parquet"
    assert saved.video_paths[KEYS[1]] == root / f"videos/{KEYS[1]}/chunk-000/file-001.mp4"
    assert (root / "meta/episodes/chunk-000/file-001.parquet").is_file()
    report = validate_dataset(root)
    assert report.ok and not report.warnings, report.format()
    reader = LeRobotDatasetReader(root)
    assert reader.num_frames == EPISODES * FRAMES + 8
    assert synthetic.read(reader.frame(EPISODES * FRAMES + 7)[KEYS[1]]) == (7, 3, 1)
    assert synthetic.read(reader.frame(EPISODES * FRAMES - 1)[KEYS[1]]) == (39, 2, 1)
