"""Running `modelyard serve` as a real process in tests: start it on a free port of 127.0.0.1,
wait for its announcement (never a sleep), talk to it with httpx, stop it."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

READY = re.compile(r"serving (\S+) on (http://127\.0\.0\.1:\d+) \((\S+); ready in ([\d.]+)s\)")


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    name: str
    predictor: str
    lines: queue.Queue[str]

    def post(self, body: Any, content_type: str = "application/json") -> httpx.Response:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return httpx.post(
            self.url + "/invocations", content=data, headers={"content-type": content_type}
        )


def start_server(*args: str, cwd: Path | None = None) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "serve", *args, "--port", "0"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:  # a thread: the test reads lines with a timeout, never blocking forever
        for text in stdout:
            lines.put(text)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    while True:  # the announcement comes once the socket listens
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            process.kill()
            raise AssertionError("the server did not start: " + "".join(seen)) from None
        seen.append(line)
        found = READY.search(line)
        if found:
            return Server(process, found[2], found[1], found[3], lines)
        if process.poll() is not None:
            raise AssertionError("the server exited: " + "".join(seen))


def stop(server: Server) -> None:
    server.process.terminate()
    server.process.wait(timeout=30)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll a condition with a deadline: for state in other processes, with nothing to join."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """Clients posting `body` to URL/invocations in threads until the block ends; every answer
    is kept as (status, the x-modelyard-variant header, the JSON body)."""

    def __init__(
        self,
        url: str,
        body: Any,
        clients: int = 1,
        headers: dict[str, str] | None = None,
    ):
        self.url = url + "/invocations"
        self.body = body
        self.headers = headers or {}
        self.answers: list[tuple[int, str | None, Any]] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()

    def _client(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopped.is_set():
                response = client.post(self.url, json=self.body, headers=self.headers)
                body = response.json() if response.content else None
                variant = response.headers.get("x-modelyard-variant")
                self.answers.append((response.status_code, variant, body))
