"""Large Arrow tables between pipeline steps go through files, not through Beam.

A Beam element of hundreds of megabytes is copied several times by the
runner's data plane (measured with FnApiRunner: about 5 s per step boundary
for 200 MB, more than the work itself), and distributed runners cap element
sizes. So a step that hands a big table on writes it as an Arrow IPC file
(LZ4) under ``{LAKE_ROOT}/_staging/{job}/{run id}/`` and passes its path;
the launcher deletes the run's directory when the job ends, whatever the
outcome. The staging area is on the lake's own filesystem, so every worker
of a distributed runner sees it.
"""

from __future__ import annotations

import uuid
from typing import Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from lake_core.storage import filesystem, fs_path, read_arrow_file
from lake_schemas import LakePaths
from lake_schemas.paths import join

__all__ = ["StagingArea", "BATCH_ROWS"]

_WRITE_OPTIONS = ipc.IpcWriteOptions(compression="lz4")
#: Rows per record batch of a staged file: what a streaming reader holds of it at once.
BATCH_ROWS = 65_536


class StagingArea:
    """One job run's directory of staged tables. Picklable: it is a pair of strings."""

    def __init__(self, lake_root: str, job: str, run_id: str = ""):
        self.lake_root = lake_root
        self.directory = join(LakePaths(lake_root).root, "_staging", job, run_id or uuid.uuid4().hex)

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        fs, _ = filesystem(self.lake_root)
        return fs, fs_path(self.lake_root, self.directory)

    def put(self, table: pa.Table, name: str = "") -> str:
        """Write ``table``; return the path to ``get`` it back with."""
        fs, directory = self._fs()
        fs.create_dir(directory, recursive=True)
        path = f"{directory}/{name or 'part'}-{uuid.uuid4().hex}.arrow"
        with fs.open_output_stream(path) as out:
            with ipc.new_file(out, table.schema, options=_WRITE_OPTIONS) as writer:
                # in record batches of BATCH_ROWS, so a reader can stream it (``batches``)
                writer.write_table(table, max_chunksize=BATCH_ROWS)
        return path

    def get(self, path: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
        """The staged table at ``path``; only ``columns`` (the others not even decompressed) when given."""
        return read_arrow_file(self.lake_root, path, columns)

    def batches(self, path: str) -> Iterator[pa.RecordBatch]:
        """The staged table at ``path``, one record batch (at most ``BATCH_ROWS`` rows) at a time."""
        fs, _ = self._fs()
        with fs.open_input_file(path) as f:
            reader = ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def remove(self) -> None:
        """Delete the run's directory (nothing happens when it was never created)."""
        fs, directory = self._fs()
        if fs.get_file_info(directory).type != pafs.FileType.NotFound:
            fs.delete_dir(directory)
