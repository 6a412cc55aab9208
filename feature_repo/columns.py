"""A columnar frame for the request path: a dict of equal-length numpy arrays that answers the
part of the pandas API the model code reads (``len``, ``in``, ``.columns``, ``frame[col]``,
``frame[[cols]].to_numpy(dtype=, na_value=)``).

Why: building, joining and deriving a 200-row pandas DataFrame cost ~20 ms of a request whose
model needs ~15 ms; the same work on arrays costs ~1 ms. Training keeps pandas; both call the same
feature code (:func:`feature_repo.features.derive_arrays`), and a test checks that the scores of
both paths agree (tests/api/test_lean_path.py).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


class _Block:
    def __init__(self, arrays: Sequence[np.ndarray], n: int):
        self.arrays, self.n = arrays, n

    def to_numpy(self, dtype=np.float64, na_value=np.nan) -> np.ndarray:
        if not self.arrays:
            return np.zeros((self.n, 0), dtype=dtype)
        out = np.empty((self.n, len(self.arrays)), dtype=dtype)
        for j, a in enumerate(self.arrays):
            out[:, j] = a
        return out


class Columns:
    """Column name -> 1-D array (float64 / int64, or object arrays holding lists), ``n`` rows."""

    def __init__(self, data: Mapping[str, np.ndarray], n: int):
        self._data = dict(data)
        self.n = int(n)

    @property
    def columns(self) -> list:
        return list(self._data)

    def __len__(self) -> int:
        return self.n

    def __contains__(self, key) -> bool:
        return key in self._data

    def __getitem__(self, key):
        if isinstance(key, (list, tuple)):
            missing = [k for k in key if k not in self._data]
            if missing:
                raise KeyError(f"missing column(s): {missing[:10]}")
            return _Block([self._data[k] for k in key], self.n)
        return self._data[key]

    def to_dict(self) -> dict:
        return dict(self._data)

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame(self._data)


def object_array(values: Sequence) -> np.ndarray:
    """A 1-D object array holding ``values`` as they are (lists stay lists)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values) if not isinstance(values, list) else values
    return out
