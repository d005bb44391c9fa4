"""Predictors: an MLflow model package loaded for serving, predicting from columns of values.

`load_predictor(folder)` picks the fastest way to predict with a package that gives the same
predictions as `mlflow.pyfunc.load_model(folder).predict(DataFrame)`:

- modelyard's inference pipeline (a fitted scikit-learn preprocessor and an XGBoost booster, see
  `modelyard/registry/pyfunc_models.py`): the fitted ColumnTransformer is compiled into a few
  numpy operations per block of columns, and the booster predicts in place from that matrix. A
  preprocessor with a part the compiler does not know runs as scikit-learn on a DataFrame built
  once per batch, still with the native booster; `describe()` says which, and why.
  Packaging writes the compiled form beside the preprocessor (`preprocessor.compiled.json`, see
  `write_compiled_preprocessor`), checked against scikit-learn there; a package that has it, for
  the very preprocessor.joblib it holds, loads with numpy alone: nothing is unpickled, and the
  booster runs through XGBoost's C library, as `import xgboost` imports scikit-learn, scipy and
  pandas (about a second). `verify=True` checks it against scikit-learn again.
- MLflow `xgboost` and `sklearn` flavor packages of numeric inputs: the model itself, on a matrix
  in the signature's column order (on a DataFrame only for scikit-learn estimators that select
  columns by name, or inputs of several types).
- anything else, or `native=False`: `mlflow.pyfunc.load_model(folder).predict(DataFrame)`.

`Predictor.predict(columns, rows)` takes column name -> list of values (what the server parses
from a request), ignores columns the model does not use, and returns one output per row. Input
values follow the pipeline's own `to_frame`: in numeric columns numbers, numeric strings and
booleans are numbers, and None, NaN and blank strings are missing values (NaN, which the
preprocessor imputes); in categorical columns strings are stripped, and None, NaN and blank
strings are missing values. (One deliberate difference: pyfunc's DataFrame keeps None as None in
a column that holds nothing else, which scikit-learn does not impute; here a missing value is
missing whatever the other rows of its batch hold, so micro-batching never changes a prediction.)

Input the model refuses (a missing column, a value that is not a number, an unknown category
where the encoder refuses them) raises `PredictError`, a ValueError naming the column where it
can; load problems raise `ArtifactError`. mlflow, xgboost, scikit-learn and pandas are imported
when a package is loaded (if at all), never when this module is.

The package, a module per concept (each says more):

- `base`: `Predictor`, `PredictError`, and the reading of input values.
- `kinds`: the predictor classes, one per kind of package (`KIND_*`).
- `loading`: `load_predictor` and the loading of each kind of package.
- `package`: the inference pipeline's artifacts and config, the package's input example.
- `compiled`: the compiled preprocessor, numpy operations step by step as scikit-learn does them.
- `compiler`: a fitted scikit-learn preprocessor compiled into those operations.
- `compiled_json`: the JSON form of the compiled preprocessor's values.
- `sklearn_transform`: scikit-learn on a DataFrame, the fallback for what does not compile.
- `verification`: the compiled preprocessor checked against scikit-learn.
- `precompiled`: the compiled preprocessor written at packaging (`write_compiled_preprocessor`).
- `xgboost_capi`: XGBoost's booster through its C API via ctypes, without `import xgboost`.
"""

from .base import PredictError, Predictor
from .kinds import KIND_PIPELINE, KIND_PYFUNC, KIND_SKLEARN, KIND_XGBOOST
from .loading import load_predictor
from .precompiled import PRECOMPILED_FILE, write_compiled_preprocessor

__all__ = [
    "KIND_PIPELINE",
    "KIND_PYFUNC",
    "KIND_SKLEARN",
    "KIND_XGBOOST",
    "PRECOMPILED_FILE",
    "PredictError",
    "Predictor",
    "load_predictor",
    "write_compiled_preprocessor",
]
