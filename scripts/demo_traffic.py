"""The demo's client for endpoints (standard library only: the demo's environment has no HTTP
client of its own).

- `python scripts/demo_traffic.py URL --csv`: POST two raw abalone rows as CSV, print the answer;
- `python scripts/demo_traffic.py URL SECONDS`: a steady trickle of requests (about 20 a second,
  one at a time) for that long, then how many each variant answered, by status.
"""

from __future__ import annotations

import collections
import sys
import time
import urllib.error
import urllib.request

COLUMNS = "sex,length,diameter,height,whole_weight,shucked_weight,viscera_weight,shell_weight"
ROWS = ("M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15", "F,0.53,0.42,0.135,0.677,0.2565,0.1415,0.21")
CSV = "\n".join((COLUMNS, *ROWS)) + "\n"


def post(url: str, body: bytes, content_type: str) -> tuple[str, int, bytes]:
    request = urllib.request.Request(
        url + "/invocations", data=body, headers={"content-type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.headers.get("x-modelyard-variant", "?"), answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.headers.get("x-modelyard-variant", "?"), error.code, error.read()


def trickle(url: str, seconds: float) -> None:
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        variant, status, _ = post(url, CSV.encode(), "text/csv")
        seen[(variant, status)] += 1
        time.sleep(0.05)  # a trickle of traffic, not a load test
    answered = ", ".join(
        f"{variant} {status}: {n}" for (variant, status), n in sorted(seen.items())
    )
    print(f"traffic over {seconds:g}s: {answered}")


if __name__ == "__main__":
    if sys.argv[2] == "--csv":
        variant, status, body = post(sys.argv[1], CSV.encode(), "text/csv")
        print(f"POST {sys.argv[1]}/invocations (2 raw rows as CSV) -> {status} from {variant}")
        print(body.decode())
    else:
        trickle(sys.argv[1], float(sys.argv[2]))
