"""Fast JSON: orjson when installed, else the standard library. `dumps` writes responses (numpy
arrays natively with orjson, through `tolist` otherwise); `fast_loads` is orjson's parser or None
(`payloads` parses requests with it, and with the standard library where orjson refuses).
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


fast_loads: Callable[[bytes], Any] | None = orjson.loads if orjson is not None else None

if orjson is not None:
    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_default, option=_OPTIONS)

else:

    def dumps(value: Any) -> bytes:
        return json.dumps(value, default=_default, separators=(",", ":")).encode()
