"""A PyTorch `Dataset` over the store, for your own training code.

    ds = StoreDataset(store, ["logmel", "egemaps"], ["emodb"], columns={"logmel": ["logmel", "logmel_shape"]},
                      time_axis={"logmel.logmel": 1})
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate)

An item is {"clip_id", "variant", "label" (index into `ds.classes`, -1 if outside), "<fs>.<column>": tensor}: a
scalar becomes a 0-d float32 tensor, a list a float32 tensor, restored to its shape when the store has a
`<column>_shape` companion (e.g. logmel [n_mels, frames]) with its `time_axis` moved first; a missing value is
None; binary columns (face crops) stay bytes. `collate` pads the arrays of a batch along their first axis to the longest one and adds
`<key>.length`. Rows are read with `FeatureStore.load` (only the columns and rows asked for).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


def _value(value, shape, time_axis: int):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bytes, bytearray)) or (len(np.shape(value)) and isinstance(value[0], bytes)):
        return value
    arr = np.asarray(value, dtype=np.float32)
    if shape is not None and not (isinstance(shape, float) and np.isnan(shape)):
        arr = np.ascontiguousarray(np.moveaxis(arr.reshape([int(s) for s in shape]), time_axis, 0))
    return torch.from_numpy(arr)


class StoreDataset(Dataset):
    def __init__(self, store, feature_sets: list[str], corpora: list[str], columns: dict[str, list[str]] | None = None,
                 variants: tuple[str, ...] = ("clean",), speakers: list[str] | None = None,
                 classes: list[str] | None = None, time_axis: dict[str, int] | None = None):
        self.df = store.load(feature_sets, corpora, variants, columns, speakers).reset_index(drop=True)
        prefixes = tuple(f"{fs}." for fs in feature_sets)
        self.columns = [c for c in self.df.columns if c.startswith(prefixes) and not c.endswith("_shape")]
        self.classes = classes or sorted(self.df["emotion"].dropna().unique())
        self.time_axis = time_axis or {}

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, i: int) -> dict:
        row = self.df.iloc[i]
        index = {c: k for k, c in enumerate(self.classes)}
        item = {"clip_id": row["clip_id"], "variant": row["variant"], "label": index.get(row["emotion"], -1)}
        for c in self.columns:
            item[c] = _value(row[c], row.get(f"{c}_shape"), self.time_axis.get(c, 0))
        return item


def collate(items: list[dict]) -> dict:
    out: dict = {}
    for key in items[0]:
        values = [item[key] for item in items]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if key == "label":
            out[key] = torch.tensor(values)
        elif len(tensors) == len(values) and all(t.dim() == 0 for t in tensors):
            out[key] = torch.stack(tensors)
        elif len(tensors) == len(values) and all(t.dim() >= 1 for t in tensors):
            out[key] = pad_sequence(tensors, batch_first=True, padding_value=float("nan"))
            out[f"{key}.length"] = torch.tensor([len(t) for t in tensors])
        else:
            out[key] = values
    return out
