"""The promise a stored feature row keeps: numbers where the schema says numbers.

Every float column and every list-of-float column must hold finite values, except the columns an extractor lists
in `nan_columns` (fnmatch patterns), where NaN documents a missing value (a frame without a face); even there,
±inf is garbage. A row breaking this becomes a `non_finite_features` ledger row, never a stored row
(`reject_garbage`, called where a worker accepts an extractor's rows), and `aver store verify` reports stored rows
that break it (`garbage_rows`).
"""
from __future__ import annotations

import fnmatch

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.extractor import Extractor, Result, failure, full_schema

REASON = "non_finite_features"


def _float_values(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray] | None:
    """(float values, row index of each value) of a float or list<float> column; None for other types."""
    array = column.combine_chunks()
    if pa.types.is_floating(array.type):
        return array, np.arange(len(array))
    if (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)) and pa.types.is_floating(
            array.type.value_type):
        return pc.list_flatten(array), pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
    return None


def bad_columns(table: pa.Table, nan_columns: tuple[str, ...] = ()) -> dict[int, list[str]]:
    """Row index -> the float columns of that row holding null, NaN or ±inf (NaN allowed in `nan_columns`)."""
    bad: dict[int, list[str]] = {}
    for name in table.column_names:
        found = _float_values(table.column(name))
        if found is None:
            continue
        values, rows = found
        nan_ok = any(fnmatch.fnmatchcase(name, p) for p in nan_columns)
        numbers = values.fill_null(np.nan).to_numpy(zero_copy_only=False)     # null counts as NaN
        ok = ~np.isinf(numbers) if nan_ok else np.isfinite(numbers)
        for row in np.unique(rows[~ok]):
            bad.setdefault(int(row), []).append(name)
    return bad


def _describe(columns: list[str]) -> str:
    shown = ", ".join(columns[:5]) + (f" and {len(columns) - 5} more" if len(columns) > 5 else "")
    return f"{len(columns)} feature column(s) hold NaN, infinite or missing values where numbers are due: {shown}"


def reject_garbage(extractor: Extractor, items: list[dict], result: Result) -> Result:
    """`result` with every row that breaks the promise moved to the ledger (reason `non_finite_features`)."""
    if not result.rows:
        return result
    table = pa.Table.from_pylist(result.rows, schema=full_schema(extractor))
    bad = bad_columns(table, getattr(extractor, "nan_columns", ()))
    if not bad:
        return result
    by_key = {(i["clip_id"], i["variant"]): i for i in items}
    kept = [row for n, row in enumerate(result.rows) if n not in bad]
    failed = [failure(by_key[(result.rows[n]["clip_id"], result.rows[n]["variant"])], extractor.kind, REASON,
                      _describe(columns)) for n, columns in sorted(bad.items())]
    return Result(kept, result.failures + failed)


def garbage_rows(table: pa.Table, nan_columns: tuple[str, ...] = ()) -> list[str]:
    """Problems for `aver store verify`: stored rows that break the promise."""
    bad = bad_columns(table, nan_columns)
    keys = [f"{table['clip_id'][n]} [{table['variant'][n]}]" for n in sorted(bad)[:3]]
    return [f"{len(bad)} rows with non-finite features, e.g. {', '.join(keys)}"] if bad else []
