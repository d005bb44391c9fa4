"""Crash safety, cancellation and the run's lease.

The crash tests start the real CLI (`python -m modelyard run`), kill it with SIGKILL while a step
is in flight, and check that what was recorded is kept, the orphaned step process is killed, and
another process (a resume, a worker) finishes the run without repeating finished work.
"""

from __future__ import annotations

import os
import signal

import pytest
import sqlalchemy as sa
from engine_harness import EngineHarness, process_gone, wait_until

from modelyard.engine import service
from modelyard.errors import StateConflict
from modelyard.executors.processes import is_same_process
from modelyard.store import schema as t
from modelyard.store.artifacts import ArtifactRef

CRASH = """
pipelines:
  crash:
    steps:
      first:
        run: @PY@ first.py @SCRATCH@
        outputs: [out]
      second:
        run: @PY@ block.py @SCRATCH@
        inputs:
          upstream: ${{ steps.first.outputs.out }}
        outputs: [out]
      third:
        run: @PY@ third.py
        inputs:
          upstream: ${{ steps.second.outputs.out }}
        outputs: [out]
"""

FILES = {
    "first.py": """
        import os, sys
        with open(os.path.join(sys.argv[1], "first.count"), "a") as f:
            f.write("ran\\n")
        with open(os.path.join(os.environ["MODELYARD_OUTPUT_OUT"], "first.txt"), "w") as f:
            f.write("hello")
    """,
    # Announces itself (pid, then a marker), then waits for a release of its own attempt.
    "block.py": """
        import os, sys, time
        from pathlib import Path

        scratch = Path(sys.argv[1])
        attempt = os.environ["MODELYARD_ATTEMPT"]
        (scratch / f"block-{attempt}.pid").write_text(str(os.getpid()))
        (scratch / f"block-{attempt}.started").write_text("")
        deadline = time.monotonic() + 120
        while not (scratch / f"release-{attempt}").exists():
            if time.monotonic() > deadline:
                sys.exit("never released")
            time.sleep(0.01)
        upstream = os.environ.get("MODELYARD_INPUT_UPSTREAM")
        text = open(os.path.join(upstream, "first.txt")).read() if upstream else ""
        with open(os.path.join(os.environ["MODELYARD_OUTPUT_OUT"], "second.txt"), "w") as f:
            f.write(text + " world")
    """,
    "third.py": """
        import os
        text = open(os.path.join(os.environ["MODELYARD_INPUT_UPSTREAM"], "second.txt")).read()
        with open(os.path.join(os.environ["MODELYARD_OUTPUT_OUT"], "third.txt"), "w") as f:
            f.write(text.upper())
    """,
}


def started_attempt_pid(engine: EngineHarness, attempt: int = 1) -> int:
    marker = engine.scratch / f"block-{attempt}.started"
    wait_until(marker.exists, f"{marker.name}")
    pid = int((engine.scratch / f"block-{attempt}.pid").read_text())
    engine.pids_to_reap.append(pid)
    return pid


def crash_mid_run(engine: EngineHarness) -> tuple[int, int]:
    """Run `crash` in the CLI and SIGKILL it while `second` runs: (run id, orphaned step pid)."""
    engine.write(CRASH, FILES)
    cli = engine.cli("run", "crash", "--quiet")

    def step_started() -> bool:
        if cli.poll() is not None:
            output = cli.stdout.read().decode() if cli.stdout else ""
            pytest.fail(f"the CLI ended early ({cli.returncode}): {output}")
        return (engine.scratch / "block-1.started").exists()

    wait_until(step_started, "the second step to start")
    orphan = started_attempt_pid(engine)
    (run,) = service.list_runs(engine.runtime)
    # the pid is recorded right after the process starts: wait for it so recovery can find it
    wait_until(lambda: engine.attempts(run.id, "second")[0].pid, "the attempt's pid")

    # while the CLI drives the run, nobody else may
    with pytest.raises(StateConflict, match="being advanced by another process"):
        service.drive_run(engine.runtime, run.id)
    with pytest.raises(StateConflict, match="being advanced by another process"):
        service.resume_run(engine.runtime, run.id)

    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    return run.id, orphan


def assert_crash_state(engine: EngineHarness, run_id: int, orphan: int) -> None:
    detail = engine.detail(run_id)
    assert detail.run.status == "running"
    assert detail.run.owner is not None  # the dead CLI still holds the lease
    first, second, third = (detail.steps[n] for n in ("first", "second", "third"))
    assert first.status == "succeeded" and first.outputs is not None
    assert [a.status for a in detail.attempts["first"]] == ["succeeded"]
    assert second.status == "running"
    (attempt,) = detail.attempts["second"]
    assert attempt.status == "running" and attempt.pid == orphan
    assert is_same_process(attempt.pid, attempt.pid_started_at)  # the step outlived its driver
    assert third.status == "pending" and detail.attempts["third"] == []


def assert_finished_after_crash(engine: EngineHarness, run_id: int, orphan: int) -> None:
    detail = engine.detail(run_id)
    assert detail.run.status == "succeeded", detail.run.message
    assert detail.run.owner is None
    assert process_gone(orphan)
    # the first step was not run again
    assert (engine.scratch / "first.count").read_text() == "ran\n"
    assert [a.status for a in detail.attempts["first"]] == ["succeeded"]
    lost, rerun = detail.attempts["second"]
    assert (lost.number, lost.status) == (1, "lost")
    assert lost.error == "the process driving the run stopped during this attempt"
    assert (rerun.number, rerun.status) == (2, "succeeded")
    assert [a.status for a in detail.attempts["third"]] == ["succeeded"]
    third = detail.steps["third"].outputs
    assert third is not None
    ref = ArtifactRef.from_json(third["out"])
    assert engine.runtime.store.read_file(ref, "third.txt") == b"HELLO WORLD"
    events = [(kind, step) for kind, step, _ in engine.events(run_id)]
    assert events.count(("attempt-lost", "second")) == 1
    # one cache entry per step and one artifact row per output, none twice
    with engine.runtime.db.begin() as conn:
        entries = conn.execute(sa.select(t.cache_entries.c.step)).scalars().all()
        artifacts = conn.execute(sa.select(t.artifacts.c.digest)).scalars().all()
    assert sorted(entries) == ["first", "second", "third"]
    outputs = {s.outputs["out"]["digest"] for s in detail.steps.values() if s.outputs}
    assert sorted(artifacts) == sorted(outputs)


def test_killed_driver_run_is_resumed_without_redoing_finished_steps(
    engine: EngineHarness,
) -> None:
    run_id, orphan = crash_mid_run(engine)
    assert_crash_state(engine, run_id, orphan)
    with engine.runtime.db.begin() as conn:
        first_entry = conn.execute(
            sa.select(t.cache_entries).where(t.cache_entries.c.step == "first")
        ).one()

    (engine.scratch / "release-2").write_text("")  # only the re-run may finish
    run = service.resume_run(engine.runtime, run_id)

    assert run.status == "succeeded", run.message
    assert_finished_after_crash(engine, run_id, orphan)
    with engine.runtime.db.begin() as conn:
        entry = conn.execute(
            sa.select(t.cache_entries).where(t.cache_entries.c.step == "first")
        ).one()
    assert entry == first_entry  # recorded once, before the crash, and not rewritten


def test_worker_resumes_an_orphaned_run(engine: EngineHarness) -> None:
    run_id, orphan = crash_mid_run(engine)
    (engine.scratch / "release-2").write_text("")

    worker = engine.cli("worker", "--once")
    output, _ = worker.communicate(timeout=120)

    assert worker.returncode == 0, output.decode()
    assert f"worker: resuming run {run_id} (crash)" in output.decode()
    assert_finished_after_crash(engine, run_id, orphan)


def test_cancelling_an_orphaned_run_kills_its_steps(engine: EngineHarness) -> None:
    run_id, orphan = crash_mid_run(engine)

    assert service.request_cancel(engine.runtime, run_id) == "cancelled"

    assert process_gone(orphan)
    detail = engine.detail(run_id)
    assert detail.run.status == "cancelled"
    assert {n: s.status for n, s in detail.steps.items()} == {
        "first": "succeeded",
        "second": "cancelled",
        "third": "cancelled",
    }
    assert [a.status for a in detail.attempts["second"]] == ["cancelled"]


BLOCKING = """
pipelines:
  slow:
    steps:
      block:
        run: @PY@ block.py @SCRATCH@
        outputs: [out]
      later:
        run: "@PY@ -c pass"
        after: [block]
"""


def test_cancel_stops_a_live_driver_and_its_processes(engine: EngineHarness) -> None:
    engine.write(BLOCKING, FILES)
    run_id = engine.create("slow")
    driver = engine.drive_in_background(run_id)
    pid = started_attempt_pid(engine)

    assert service.request_cancel(engine.runtime, run_id) == "requested"
    run = driver.join()

    assert run.status == "cancelled"
    assert run.owner is None
    assert process_gone(pid)
    steps = engine.steps(run_id)
    assert steps["block"].status == "cancelled"
    assert steps["later"].status == "cancelled"
    assert [a.status for a in engine.attempts(run_id, "block")] == ["cancelled"]
    assert engine.attempts(run_id, "later") == []
    with pytest.raises(StateConflict, match=r"already finished \(cancelled\)"):
        service.request_cancel(engine.runtime, run_id)


def test_cancel_without_a_driver_marks_the_run_cancelled(engine: EngineHarness) -> None:
    engine.write(BLOCKING, FILES)
    run_id = engine.create("slow")

    assert service.request_cancel(engine.runtime, run_id) == "cancelled"

    detail = engine.detail(run_id)
    assert detail.run.status == "cancelled"
    assert detail.run.finished_at is not None
    assert {s.status for s in detail.steps.values()} == {"cancelled"}
    assert not (engine.scratch / "block-1.started").exists()
    with pytest.raises(StateConflict, match=r"has already finished \(cancelled\)"):
        service.drive_run(engine.runtime, run_id)


def test_second_driver_is_refused_while_the_first_holds_the_lease(
    engine: EngineHarness,
) -> None:
    engine.write(BLOCKING, FILES)
    run_id = engine.create("slow")
    first = engine.drive_in_background(run_id)
    pid = started_attempt_pid(engine)
    owner = engine.detail(run_id).run.owner
    before = engine.snapshot()
    del before["runs"]  # its lease_until moves with the first driver's heartbeat

    with pytest.raises(StateConflict, match="being advanced by another process"):
        service.drive_run(engine.runtime, run_id)
    with pytest.raises(StateConflict, match="being advanced by another process"):
        service.resume_run(engine.runtime, run_id)

    after = engine.snapshot()
    del after["runs"]
    assert after == before
    assert engine.detail(run_id).run.owner == owner
    (attempt,) = engine.attempts(run_id, "block")
    assert attempt.status == "running"
    assert is_same_process(attempt.pid, attempt.pid_started_at) and attempt.pid == pid
    (engine.scratch / "release-1").write_text("")
    run = first.join()
    assert run.status == "succeeded", run.message
    assert [a.status for a in engine.attempts(run_id, "block")] == ["succeeded"]


INLINE_BLOCKING = """
pipelines:
  slow:
    steps:
      block:
        python: {module}:block
        executor: inline
        {timeout}
"""

INLINE_MODULE = """
    import time
    from pathlib import Path

    def block(context):
        scratch = Path(context.project_dir).parent / "scratch"
        (scratch / "inline.started").write_text("")
        deadline = time.monotonic() + 120
        while not (scratch / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        (scratch / "inline.returned").write_text("")
"""


def test_cancel_does_not_wait_for_a_running_inline_step(engine: EngineHarness) -> None:
    module = f"inline_block_{engine.root.parent.name}"
    engine.write(INLINE_BLOCKING.format(module=module, timeout=""), {f"{module}.py": INLINE_MODULE})
    run_id = engine.create("slow")
    driver = engine.drive_in_background(run_id)
    wait_until((engine.scratch / "inline.started").exists, "the inline step to start")

    try:
        assert service.request_cancel(engine.runtime, run_id) == "requested"
        run = driver.join()
        # the run ended while its step's thread still runs: a thread cannot be killed
        assert not (engine.scratch / "inline.returned").exists()
    finally:
        (engine.scratch / "release").write_text("")

    assert run.status == "cancelled"
    assert engine.steps(run_id)["block"].status == "cancelled"
    assert [a.status for a in engine.attempts(run_id, "block")] == ["cancelled"]


def test_inline_step_timeout_ends_the_attempt(engine: EngineHarness) -> None:
    module = f"inline_timeout_{engine.root.parent.name}"
    engine.write(
        INLINE_BLOCKING.format(module=module, timeout="timeout: 0.5s"),
        {f"{module}.py": INLINE_MODULE},
    )

    try:
        run = engine.run("slow")
        assert not (engine.scratch / "inline.returned").exists()
    finally:
        (engine.scratch / "release").write_text("")

    assert run.status == "failed"
    step = engine.steps(run.id)["block"]
    assert step.message.startswith("timed out after 0.5s (inline steps cannot be killed")
    assert [a.status for a in engine.attempts(run.id, "block")] == ["timed-out"]
