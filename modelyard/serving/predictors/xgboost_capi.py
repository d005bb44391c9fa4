"""XGBoost through its C API via ctypes: a booster that predicts without `import xgboost`.

`import xgboost` imports scikit-learn, scipy and pandas (about a second); a package whose
preprocessor was compiled at packaging runs its booster through `_LibBooster` instead, which
makes the calls xgboost.Booster makes, so it predicts exactly what it predicts.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import sys
import weakref
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .base import Floats


class _XGBoostError(RuntimeError):
    """XGBoost's library failed (the message is its own)."""


@cache
def _xgboost_library() -> ctypes.CDLL | None:
    """XGBoost's shared library, loaded as the xgboost package loads it but without importing
    that package; None where it is not in the package's lib folder (then xgboost is imported)."""
    spec = importlib.util.find_spec("xgboost")
    name = {"darwin": "libxgboost.dylib", "win32": "xgboost.dll"}.get(sys.platform, "libxgboost.so")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "lib" / name
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
            lib.XGBGetLastError.restype = ctypes.c_char_p
            major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            lib.XGBoostVersion(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
        except (OSError, AttributeError):  # a dependency missing (OpenMP), an odd build
            return None
        return lib if major.value >= 2 else None  # the C API _LibBooster calls, as of 2.0
    return None


class _LibBooster:
    """An XGBoost model through XGBoost's C API: the calls xgboost.Booster(model_file=...) and
    its inplace_predict on a numpy matrix make, so it predicts exactly what they predict."""

    def __init__(self, lib: ctypes.CDLL, path: Path, nthread: int) -> None:
        self._lib = lib
        self._handle = ctypes.c_void_p()
        self._call("XGBoosterCreate", None, ctypes.c_uint64(0), ctypes.byref(self._handle))
        weakref.finalize(self, lib.XGBoosterFree, self._handle)
        self._call("XGBoosterLoadModel", self._handle, str(path).encode("utf-8"))
        for key, value in {"validate_parameters": "True", "nthread": str(nthread)}.items():
            self._call("XGBoosterSetParam", self._handle, key.encode(), value.encode())
        # inplace_predict's defaults: values (no margin), all trees, NaN is missing
        config = {
            "type": 0,
            "training": False,
            "iteration_begin": 0,
            "iteration_end": 0,
            "missing": math.nan,
            "strict_shape": False,
            "cache_id": 0,
        }
        self._config = json.dumps(config).encode()  # NaN as XGBoost's own JSON reader takes it

    def _call(self, function: str, *args: Any) -> None:
        if getattr(self._lib, function)(*args) != 0:
            raise _XGBoostError(self._lib.XGBGetLastError().decode("utf-8", "replace"))

    def num_features(self) -> int:
        count = ctypes.c_uint64()
        self._call("XGBoosterGetNumFeature", self._handle, ctypes.byref(count))
        return int(count.value)

    def inplace_predict(
        self, data: Floats, validate_features: bool = False
    ) -> npt.NDArray[np.float32]:
        """Predictions for a float64 matrix (any strides), as xgboost.Booster.inplace_predict."""
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        result = ctypes.POINTER(ctypes.c_float)()
        interface = json.dumps(data.__array_interface__).encode()
        self._call(
            "XGBoosterPredictFromDense",
            self._handle,
            interface,
            self._config,
            None,  # no proxy DMatrix (no base margin)
            ctypes.byref(shape),
            ctypes.byref(dims),
            ctypes.byref(result),
        )
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        size = math.prod(out_shape)
        if size == 0:
            empty = out_shape if result else (0,)  # as xgboost makes it: no buffer is (0,)
            return np.zeros(empty, dtype=np.float32)
        # a copy: the library reuses its buffer for this thread's next prediction
        return np.ctypeslib.as_array(result, shape=(size,)).reshape(out_shape).copy()
