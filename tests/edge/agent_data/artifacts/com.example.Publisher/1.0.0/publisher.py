"""Test component: publishes {"n": N} to local/data every 0.1 s; once (at N = 3) it also tries
a topic its accessControl does not grant, records the refusal, and carries on."""

import sys
import time
from pathlib import Path

from modelyard.edge import ipc

out = Path(sys.argv[1]) / "publisher.log"


def note(text: str) -> None:
    with out.open("a") as handle:
        handle.write(text + "\n")


with ipc.connect() as client:
    n = 0
    while True:
        n += 1
        client.publish("local/data", {"n": n})
        if n == 3:
            try:
                client.publish("forbidden/topic", {"n": n})
                note(f"allowed {n}")
            except ipc.UnauthorizedError as exc:
                note(f"denied {n} {exc.code}")
        time.sleep(0.1)
