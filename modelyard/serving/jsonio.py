"""Fast JSON responses: orjson when installed (numpy arrays serialized natively), else the
standard library (numpy arrays through `tolist`). (Requests are parsed in `payloads`.)"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # the `serve` extra brings it; without it, slower but the same JSON
    orjson = None  # type: ignore[assignment]


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


if orjson is not None:
    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_default, option=_OPTIONS)

else:

    def dumps(value: Any) -> bytes:
        return json.dumps(value, default=_default, separators=(",", ":")).encode()
