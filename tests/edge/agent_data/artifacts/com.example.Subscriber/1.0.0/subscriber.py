"""Test component: writes every message it receives on local/data, one JSON line each."""

import json
import sys
import threading
from pathlib import Path

from modelyard.edge import ipc

out = Path(sys.argv[1]) / "received.log"


def on_message(topic: str, message: object) -> None:
    with out.open("a") as handle:
        handle.write(json.dumps({"topic": topic, "message": message}) + "\n")


with ipc.connect() as client:
    client.subscribe("local/data", on_message)
    threading.Event().wait()
