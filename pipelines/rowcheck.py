"""The promise a stored feature row keeps: numbers where the schema says numbers.

Every float column and every list-of-float column must hold finite values, except the columns an extractor lists
in `nan_columns` (fnmatch patterns), where NaN documents a missing value (a frame without a face); even there,
±inf is garbage. A row breaking this becomes a `non_finite_features` ledger row, never a stored row
(`reject_garbage`, called where a worker accepts an extractor's rows), and `aver store verify` reports stored rows
that break it (`garbage_rows`).
"""
from __future__ import annotations

import fnmatch
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.extractor import Extractor, Result, failure

REASON = "non_finite_features"
_FLOAT_COLUMNS: dict[tuple, tuple[list[str], list[str]]] = {}


def _is_float_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_floating(t.value_type)


def _nan_allowed(name: str, nan_columns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in nan_columns)


def _array(value) -> np.ndarray:
    return np.asarray([] if value is None else value, dtype=np.float64)


def _describe(columns: list[str]) -> str:
    shown = ", ".join(columns[:5]) + (f" and {len(columns) - 5} more" if len(columns) > 5 else "")
    return f"{len(columns)} feature column(s) hold NaN, infinite or missing values where numbers are due: {shown}"


# ---- rows as an extractor returns them ---------------------------------------------------------------------
def _float_columns(extractor: Extractor) -> tuple[list[str], list[str]]:
    """(float columns, list-of-float columns) of an extractor's schema, computed once per configuration."""
    key = (extractor.kind, extractor.version, json.dumps(extractor.params, sort_keys=True, default=str))
    if key not in _FLOAT_COLUMNS:
        schema = extractor.schema()
        _FLOAT_COLUMNS[key] = ([f.name for f in schema if pa.types.is_floating(f.type)],
                               [f.name for f in schema if _is_float_list(f.type)])
    return _FLOAT_COLUMNS[key]


def row_bad_columns(row: dict, extractor: Extractor) -> list[str]:
    """The columns of one row (a dict) that break the promise; no table is built (ComParE has 6373 columns)."""
    scalars, lists = _float_columns(extractor)
    values = np.array([np.nan if row.get(n) is None else row[n] for n in scalars], dtype=np.float64)
    bad = [n for n, ok in zip(scalars, np.isfinite(values)) if not ok]
    bad += [n for n in lists if not np.isfinite(_array(row.get(n))).all()]
    nan_columns = getattr(extractor, "nan_columns", ())
    return [n for n in bad if not _nan_allowed(n, nan_columns) or np.isinf(_array(row.get(n))).any()]


def reject_garbage(extractor: Extractor, items: list[dict], result: Result) -> Result:
    """`result` with every row that breaks the promise moved to the ledger (reason `non_finite_features`)."""
    by_key = {(i["clip_id"], i["variant"]): i for i in items}
    out = Result(failures=list(result.failures), errors=list(result.errors))
    for row in result.rows:
        columns = row_bad_columns(row, extractor)
        if columns:
            out.failures.append(failure(by_key[(row["clip_id"], row["variant"])], extractor.kind, REASON,
                                        _describe(columns)))
        else:
            out.rows.append(row)
    return out


# ---- stored tables -----------------------------------------------------------------------------------------
def _float_values(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray] | None:
    """(float values, row index of each value) of a float or list<float> column; None for other types."""
    array = column.combine_chunks()
    if pa.types.is_floating(array.type):
        return array, np.arange(len(array))
    if _is_float_list(array.type):
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
        numbers = values.fill_null(np.nan).to_numpy(zero_copy_only=False)     # null counts as NaN
        ok = ~np.isinf(numbers) if _nan_allowed(name, nan_columns) else np.isfinite(numbers)
        for row in np.unique(rows[~ok]):
            bad.setdefault(int(row), []).append(name)
    return bad


def garbage_rows(table: pa.Table, nan_columns: tuple[str, ...] = ()) -> list[str]:
    """Problems for `aver store verify`: stored rows that break the promise."""
    bad = bad_columns(table, nan_columns)
    keys = [f"{table['clip_id'][n]} [{table['variant'][n]}]" for n in sorted(bad)[:3]]
    return [f"{len(bad)} rows with non-finite features, e.g. {', '.join(keys)}"] if bad else []
