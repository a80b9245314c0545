"""Read MATLAB ``.mat`` files of either format into one plain-Python form.

MATLAB writes v4-v7 files, which scipy reads, and v7.3 files, which are HDF5 and need h5py.
Both readers are turned into the same values, so dataset parsers need not care which one a
user's copy is:

- char arrays -> ``str``
- numeric and logical arrays -> ``numpy.ndarray`` with MATLAB's shape (h5py's is reversed)
- cell arrays -> ``numpy.ndarray`` of objects with MATLAB's shape, elements converted
- a 1x1 struct -> ``dict`` of converted fields; a struct array -> object array of such dicts
- empty values -> an empty array (``""`` for chars)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io


def load_mat(path: str | Path, variable_names: Sequence[str]) -> dict[str, Any]:
    """Load ``variable_names`` from a ``.mat`` file of any version (v5 via scipy, v7.3 via h5py).

    Args:
        path: the ``.mat`` file.
        variable_names: variables to read; each must be present.

    Returns:
        Variable name -> value in the plain form described in this module's docstring.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a MATLAB file or lacks a variable (message names both).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MATLAB file not found: {path}")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as mat:
            missing = [name for name in variable_names if name not in mat]
            if missing:
                raise ValueError(f"{path} has no variable(s) {missing}; it has {sorted(mat)}")
            return {name: _from_hdf5(mat, mat[name]) for name in variable_names}
    try:
        raw = scipy.io.loadmat(path, variable_names=list(variable_names))
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"cannot read {path} as a MATLAB file: {err}") from err
    missing = [name for name in variable_names if name not in raw]
    if missing:
        raise ValueError(f"{path} has no variable(s) {missing}")
    return {name: _from_scipy(raw[name]) for name in variable_names}


def struct_list(value: Any) -> list[dict[str, Any]]:
    """A converted struct, struct array or cell of structs as a list of dicts, in MATLAB order.

    Raises:
        ValueError: ``value`` holds something other than structs.
    """
    elements = value.ravel(order="F") if isinstance(value, np.ndarray) else [value]
    for element in elements:
        if not isinstance(element, dict):
            raise ValueError(f"expected MATLAB structs, got a {type(element).__name__}")
    return list(elements)


def _from_scipy(value: Any) -> Any:
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind == "U":
        return "".join(value.ravel().tolist())
    if value.dtype.names is not None:
        structs = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            structs[index] = {
                field: _from_scipy(value[index][field]) for field in value.dtype.names
            }
        return structs[(0,) * value.ndim] if value.size == 1 else structs
    if value.dtype == object:
        cells = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            cells[index] = _from_scipy(value[index])
        return cells
    return value


def _from_hdf5(mat: h5py.File, node: h5py.Dataset | h5py.Group) -> Any:
    matlab_class = node.attrs.get("MATLAB_class", b"")
    matlab_class = matlab_class.decode() if isinstance(matlab_class, bytes) else matlab_class
    if isinstance(node, h5py.Group):
        return _struct_from_hdf5(mat, node)
    if node.attrs.get("MATLAB_empty", 0):
        # An empty value stores its dimensions as data, not values.
        return "" if matlab_class == "char" else np.empty((0, 0), dtype=object)
    data = node[()]
    if matlab_class == "char":
        return "".join(map(chr, np.asarray(data).T.ravel()))
    if data.dtype == h5py.ref_dtype:
        return _cells_from_hdf5(mat, data)
    data = np.asarray(data).T
    return data.astype(bool) if matlab_class == "logical" else data


def _cells_from_hdf5(mat: h5py.File, refs: np.ndarray) -> np.ndarray:
    refs = refs.T
    cells = np.empty(refs.shape, dtype=object)
    for index in np.ndindex(refs.shape):
        cells[index] = _from_hdf5(mat, mat[refs[index]])
    return cells


def _struct_from_hdf5(mat: h5py.File, group: h5py.Group) -> Any:
    fields = [key for key in group if not key.startswith("#")]
    # A struct array stores each field as an array of references, one per element (and a field
    # of a 1x1 struct that holds a cell is marked "cell"); a 1x1 struct stores fields directly.
    shapes = {
        group[f].shape
        for f in fields
        if isinstance(group[f], h5py.Dataset)
        and group[f].dtype == h5py.ref_dtype
        and group[f].attrs.get("MATLAB_class", b"") not in (b"cell", "cell")
    }
    if not shapes:
        return {field: _from_hdf5(mat, group[field]) for field in fields}
    (shape,) = shapes
    refs = {field: group[field][()].T for field in fields}
    structs = np.empty(shape[::-1], dtype=object)
    for index in np.ndindex(structs.shape):
        structs[index] = {field: _from_hdf5(mat, mat[refs[field][index]]) for field in fields}
    return structs[(0,) * structs.ndim] if structs.size == 1 else structs
