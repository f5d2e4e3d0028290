"""A user's own tabular data: ``.csv`` / ``.npy`` files loaded as (N, D) tensors, with errors
that point at the offending row and column.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["load_array", "read_header", "ArrayDataset"]

SUFFIXES: tuple[str, ...] = (".csv", ".npy")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # values beyond it overflow in training
_NPY_MAGIC = b"\x93NUMPY"


def _check_value(path: Path, where: str, value: float, cell: object) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{path}: {where} holds {cell!r} (NaN or infinite); drop or impute it.")
    if abs(value) > FLOAT32_MAX:
        raise ValueError(
            f"{path}: {where} holds {cell!r}, beyond the float32 range (|x| <= 3.4e38) that "
            "training uses; rescale that column (e.g. to other units or a log scale)."
        )


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _load_csv(path: Path) -> np.ndarray:
    """Parse a comma-separated file of numbers, one sample per line; rows are numbered as in an
    editor (line 1 is the first line of the file)."""
    try:
        return _parse_csv(path)
    except UnicodeDecodeError as e:
        byte = e.object[e.start : e.start + 1]
        raise ValueError(
            f"{path} is not a UTF-8 text CSV (byte {e.start} is {byte!r}, which is not text); "
            "save it as comma-separated UTF-8 text, or as a .npy array."
        ) from None
    except csv.Error as e:
        raise ValueError(
            f"{path} is not a comma-separated text file ({e}); save it as UTF-8 text with one "
            "row of numbers per line, or as a .npy array."
        ) from None


def _parse_csv(path: Path) -> np.ndarray:
    rows: list[list[float]] = []
    header_checked = False
    width, width_line = 0, 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue  # blank line
            cells = [c.strip() for c in cells]
            if not header_checked:
                header_checked = True
                # A header is a first row in which no cell is a number; a partly numeric first
                # row is data (a typo there should be reported, not skipped silently).
                if all(_parse_float(c) is None for c in cells):
                    continue
            if not rows:
                width, width_line = len(cells), line
            elif len(cells) != width:
                raise ValueError(
                    f"{path}: row {line} has {len(cells)} columns but row {width_line} has "
                    f"{width}; every row must have the same number of comma-separated values."
                )
            values = []
            for col, cell in enumerate(cells, start=1):
                value = _parse_float(cell)
                if value is None:
                    raise ValueError(
                        f"{path}: row {line}, column {col}: {cell!r} is not a number; "
                        "the file must be numeric apart from an optional header row."
                    )
                _check_value(path, f"row {line}, column {col}", value, cell)
                values.append(value)
            rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no data rows found; expected one sample per line.")
    return np.asarray(rows, dtype=np.float64)


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise ValueError(
            f"{path} is not a .npy file (it does not start with NumPy's format signature); "
            "write the array with np.save(path, a), or pass a .csv file."
        )
    try:
        a = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickled" in str(e):
            raise ValueError(
                f"{path} holds Python objects (an object array or pickled data), which "
                "flowforge does not load; save a numeric array: np.save(path, "
                "a.astype(np.float32))."
            ) from None
        raise ValueError(
            f"{path} is truncated or corrupt ({e}); write it again with np.save(path, a)."
        ) from None
    except (OSError, EOFError) as e:
        raise ValueError(
            f"{path} is truncated or corrupt ({e}); write it again with np.save(path, a)."
        ) from None
    if a.dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: array of dtype {a.dtype} is not numeric; save a float array, e.g. "
            "np.save(path, a.astype(np.float32))."
        )
    if a.ndim == 1:
        raise ValueError(
            f"{path}: array has shape {a.shape} (1-D); expected (N, D) samples in rows. For N "
            "scalar samples save a.reshape(-1, 1); for one D-dim sample save a.reshape(1, -1)."
        )
    if a.ndim != 2:
        raise ValueError(
            f"{path}: array has shape {a.shape} ({a.ndim}-D); expected (N, D) samples in rows. "
            "Flatten each sample first: np.save(path, a.reshape(len(a), -1))."
        )
    bad = np.argwhere(~np.isfinite(a) | (np.abs(a.astype(np.float64)) > FLOAT32_MAX))
    if len(bad):
        i, j = bad[0]
        value = a[i, j].item()
        _check_value(path, f"a[{i}, {j}] (0-based; {len(bad)} in all)", value, value)
    return a


def read_header(path: str | os.PathLike) -> list[str] | None:
    """The column names of a CSV file's header row (a first row in which no cell is a
    number), or None (no header, or not a CSV file).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
        >>> _ = p.write_text("height,weight\\n1,2\\n")
        >>> read_header(p)
        ['height', 'weight']
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for cells in csv.reader(f):
                if cells and any(c.strip() for c in cells):
                    cells = [c.strip() for c in cells]
                    return cells if all(_parse_float(c) is None for c in cells) else None
    except (UnicodeDecodeError, csv.Error):
        return None
    return None


def load_array(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Tensor:
    """Load an (N, D) array of samples from a ``.csv`` or ``.npy`` file.

    CSV: comma-separated numbers, one sample per line; a first row in which no cell is a number
    is taken as a header and skipped; blank lines are skipped. NPY: a 2-D numeric array
    (loaded without pickle). Errors name the file, the row and the column of the first bad
    value (CSV rows count file lines from 1, as an editor shows them).

    Args:
        path: file ending in ``.csv`` or ``.npy`` (any case).
        dtype: floating dtype of the result.

    Returns:
        (N, D) tensor.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, a file that is not text CSV or .npy, a truncated file, an
            object array, a non-numeric, NaN/inf or beyond-float32 cell, ragged rows, a wrong
            rank or no columns.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
        >>> _ = p.write_text("x,y\\n1,2\\n3,4\\n")
        >>> load_array(p).tolist()
        [[1.0, 2.0], [3.0, 4.0]]
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: unknown extension {path.suffix!r}; supported: .csv (comma-separated "
            "numbers) and .npy (a 2-D array saved with np.save)."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (absolute: {path.resolve()}).")
    a = _load_csv(path) if suffix == ".csv" else _load_npy(path)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(
            f"{path} holds an array of shape {a.shape}; expected at least one row and one "
            "feature column."
        )
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


class ArrayDataset(Dataset):
    """A map-style dataset over the rows of an (N, D) tensor, with optional (N,) labels.

    ``dataset[i]`` is ``x[i]`` without labels and ``(x[i], labels[i])`` with them.

    Args:
        x: (N, ...) samples.
        labels: (N,) class labels or (N, ...) conditions, or None.

    Example:
        >>> ds = ArrayDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1]))
        >>> len(ds), ds[1][1].item()
        (3, 1)
    """

    def __init__(self, x: Tensor, labels: Tensor | None = None) -> None:
        if x.dim() < 1:
            raise ValueError(f"x has shape {tuple(x.shape)}; pass (N, ...) samples in rows.")
        if labels is not None and (labels.dim() == 0 or labels.shape[0] != x.shape[0]):
            raise ValueError(
                f"labels has shape {tuple(labels.shape)} but x has {x.shape[0]} rows; pass "
                "one label per sample."
            )
        self.x = x
        self.labels = labels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> Tensor | tuple[Tensor, Tensor]:
        if self.labels is None:
            return self.x[i]
        return self.x[i], self.labels[i]
