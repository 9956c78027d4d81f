"""Parquet tables of one shard each (CapFilt's scores, select's choices), written atomically.

The same table always gives the same bytes (fixed compression, no timestamps in pyarrow's footer), so
a table, like a shard, is a pure function of its inputs and the manifest's sha256 is its version.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from blip.data import storage

META_KEY = b"blip"  # a table's own record of what it is (CapFilt: the job's fingerprint, input, counts)


def write_table(url: str | Path, table: pa.Table, meta: dict | None = None) -> dict:
    """Write `table` to `url` atomically ("{sha}" in `url`: the first 16 hex digits of its sha256), with `meta`
    as key-sorted JSON in its footer; returns its manifest entry (name, rows, bytes, sha256)."""
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               META_KEY: json.dumps(meta, sort_keys=True).encode()})
    buf = io.BytesIO()
    # one row group per shard's table: readers take whole tables, and a row group holds ~1e5 rows at most
    pq.write_table(table, buf, compression="zstd", row_group_size=max(1, table.num_rows))
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    url = str(url).replace("{sha}", digest[:16])
    storage.write_bytes(url, data)
    return {"name": url.rsplit("/", 1)[-1], "rows": table.num_rows, "bytes": len(data), "sha256": digest}


def table_meta(url: str | Path) -> tuple[dict | None, int]:
    """A table's own record (`write_table`'s `meta`; None when it has none) and its row count, from its footer
    alone: the rows are not read."""
    try:
        with storage.open_read(url) as f:
            footer = pq.read_metadata(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{url}: not a readable Parquet table ({e}); re-run the stage that wrote it") from None
    raw = (footer.metadata or {}).get(META_KEY)
    return (json.loads(raw) if raw else None), footer.num_rows


def read_table(url: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The table at `url` (only `columns`, when given), with a clear error when it is not one."""
    try:
        with storage.open_read(url) as f:
            return pq.read_table(f, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{url}: not a readable Parquet table ({e}); re-run the stage that wrote it") from None
