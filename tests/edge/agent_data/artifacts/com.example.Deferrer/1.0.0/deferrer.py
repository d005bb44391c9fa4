"""Test component: defers the first update it is told about by 1.5 s, then lets it go ahead;
writes "<time> <event> <deployment id>" lines (deferred, acked, post), and first
"<time> ready <its configuration's batch>"."""

import sys
import threading
import time
from pathlib import Path

from modelyard.edge import ipc

out = Path(sys.argv[1]) / "updates.log"
answered: list[str] = []


def note(text: str) -> None:
    with out.open("a") as handle:
        handle.write(f"{time.time():.3f} {text}\n")


with ipc.connect() as client:

    def on_update(update: ipc.ComponentUpdate) -> None:
        if update.phase != "pre":
            note(f"post {update.deployment_id}")
        elif not answered:
            answered.append(update.deployment_id)
            note(f"deferred {update.deployment_id}")
            client.defer_component_update(update.deployment_id, 1500, "busy: finishing a batch")
        else:
            note(f"acked {update.deployment_id}")
            client.acknowledge_component_update(update.deployment_id)

    client.subscribe_to_component_updates(on_update)
    note(f"ready {client.get_configuration(['batch'])}")  # its configuration, over IPC
    threading.Event().wait()
