"""scikit-learn on a DataFrame: the fallback for preprocessors the compiler does not know.

The DataFrame is built once per batch as the pipeline's `to_frame` builds it. pandas is
imported when a batch is transformed, never when this module is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import _MISSING, Columns, Floats, PredictError, _category, _number_matrix

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class _SklearnTransform:
    preprocessor: Any
    columns: tuple[str, ...]
    numeric: frozenset[str]

    def __call__(self, columns: Columns, rows: int) -> Floats:
        frame = self.frame(columns)
        try:
            features = self.preprocessor.transform(frame)
        except (ValueError, TypeError) as exc:  # unknown categories, values of a wrong type
            raise PredictError(f"the preprocessor refuses the input: {exc}") from None
        if hasattr(features, "toarray"):  # a sparse matrix
            features = features.toarray()
        return np.asarray(features, dtype=np.float64)

    def frame(self, columns: Columns) -> pd.DataFrame:
        """The input as the pipeline's to_frame makes it (numbers parsed, blanks missing)."""
        import pandas as pd

        data: dict[str, Any] = {}
        for name in self.columns:
            if name in self.numeric:
                data[name] = _number_matrix(columns, [name], finite=False)[:, 0]
            else:
                values = [_category(v) for v in columns[name]]
                data[name] = np.array(
                    [math.nan if v is _MISSING else v for v in values], dtype=object
                )
        return pd.DataFrame(data, columns=list(self.columns))
