"""How attempts are scheduled: steps in parallel up to the limit, retries with backoff, timeouts
that kill a step's whole process tree."""

from __future__ import annotations

from engine_harness import EngineHarness, process_gone, wait_until

# Each step announces itself, then waits (bounded) until its partner has announced itself too:
# the run can only succeed if both steps were running at the same time.
MEET = """
    import sys, time
    from pathlib import Path

    me, partner = sys.argv[1], sys.argv[2]
    scratch = Path(sys.argv[3])
    (scratch / f"{me}.started").write_text("")
    deadline = time.monotonic() + 30
    while not (scratch / f"{partner}.started").exists():
        if time.monotonic() > deadline:
            sys.exit(f"{me} never saw {partner} running")
        time.sleep(0.01)
"""

PAIR = """
pipelines:
  pair:
    steps:
      left:
        run: @PY@ meet.py left right @SCRATCH@
        cache: false
      right:
        run: @PY@ meet.py right left @SCRATCH@
        cache: false
      join:
        run: "@PY@ -c pass"
        after: [left, right]
"""


def test_independent_steps_run_concurrently(engine: EngineHarness) -> None:
    engine.write(PAIR, {"meet.py": MEET})

    run = engine.run("pair", max_parallel=2)

    assert run.status == "succeeded", run.message
    assert {s.status for s in engine.steps(run.id).values()} == {"succeeded"}


# With one slot, each step takes a lock that only one step may hold, and waits for a release
# that the test gives only after it has seen that the other step has not started.
SOLO = """
    import os, sys, time
    from pathlib import Path

    me = sys.argv[1]
    scratch = Path(sys.argv[2])
    try:
        lock = os.open(scratch / "slot.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        sys.exit(f"{me} started while another step held the slot")
    (scratch / f"{me}.started").write_text("")
    deadline = time.monotonic() + 30
    while not (scratch / "release").exists():
        if time.monotonic() > deadline:
            sys.exit(f"{me} was never released")
        time.sleep(0.01)
    os.close(lock)
    os.unlink(scratch / "slot.lock")
    (scratch / f"{me}.done").write_text("")
"""

SERIAL = """
pipelines:
  pair:
    steps:
      left:
        run: @PY@ solo.py left @SCRATCH@
      right:
        run: @PY@ solo.py right @SCRATCH@
"""


def test_max_parallel_one_runs_one_step_at_a_time(engine: EngineHarness) -> None:
    engine.write(SERIAL, {"solo.py": SOLO})
    run_id = engine.create("pair", max_parallel=1)
    driver = engine.drive_in_background(run_id)
    scratch = engine.scratch

    first = wait_until(
        lambda: next((n for n in ("left", "right") if (scratch / f"{n}.started").exists()), None),
        "a step to start",
    )
    other = "right" if first == "left" else "left"
    steps = engine.steps(run_id)
    assert steps[first].status == "running"
    assert steps[other].status == "pending"
    assert engine.attempts(run_id, other) == []
    assert not (scratch / f"{other}.started").exists()
    (scratch / "release").write_text("")
    run = driver.join()

    assert run.status == "succeeded", run.message
    (a,) = engine.attempts(run_id, first)
    (b,) = engine.attempts(run_id, other)
    assert a.finished_at is not None and a.finished_at <= b.started_at


FLAKY = """
pipelines:
  p:
    steps:
      flaky:
        run: @PY@ flaky.py @SCRATCH@/flaky.count {succeed_on}
        retries: {{max: {retries}, backoff: 0.2s, factor: 1}}
        values: [attempt]
"""

FLAKY_SCRIPT = """
    import json, os, sys
    counter, succeed_on = sys.argv[1], int(sys.argv[2])
    with open(counter, "a") as f:
        f.write("attempt\\n")
    number = len(open(counter).read().splitlines())
    if number < succeed_on:
        print(f"transient failure number {number}")
        sys.exit(3)
    with open(os.environ["MODELYARD_VALUES_FILE"], "w") as f:
        json.dump({"attempt": int(os.environ["MODELYARD_ATTEMPT"])}, f)
"""


def test_failed_attempt_is_retried_after_backoff(engine: EngineHarness) -> None:
    engine.write(FLAKY.format(succeed_on=2, retries=2), {"flaky.py": FLAKY_SCRIPT})

    run = engine.run("p")

    assert run.status == "succeeded", run.message
    step = engine.steps(run.id)["flaky"]
    assert step.status == "succeeded"
    assert step.attempts == 2 and step.failures == 1
    assert step.values == {"attempt": 2}
    first, second = engine.attempts(run.id, "flaky")
    assert (first.number, first.status, first.exit_code) == (1, "failed", 3)
    assert first.error == "exit code 3: transient failure number 1"
    assert (second.number, second.status) == (2, "succeeded")
    # the engine holds the retry back by the backoff (a lower bound, so never flaky)
    assert first.finished_at is not None and second.started_at >= first.finished_at + 0.2
    assert ("step-retrying", "flaky") in {(k, s) for k, s, _ in engine.events(run.id)}
    assert len((engine.scratch / "flaky.count").read_text().splitlines()) == 2


def test_exhausted_retries_fail_with_the_last_error(engine: EngineHarness) -> None:
    engine.write(FLAKY.format(succeed_on=99, retries=2), {"flaky.py": FLAKY_SCRIPT})

    run = engine.run("p")

    assert run.status == "failed"
    step = engine.steps(run.id)["flaky"]
    assert step.status == "failed"
    assert step.attempts == 3 and step.failures == 3
    assert step.message == "exit code 3: transient failure number 3"
    assert "transient failure number 3" in run.message
    attempts = engine.attempts(run.id, "flaky")
    assert [(a.number, a.status) for a in attempts] == [(n, "failed") for n in (1, 2, 3)]
    assert [a.error for a in attempts] == [
        f"exit code 3: transient failure number {n}" for n in (1, 2, 3)
    ]
    assert len((engine.scratch / "flaky.count").read_text().splitlines()) == 3


TIMEOUT = """
pipelines:
  p:
    steps:
      hang:
        run:
          - sh
          - -c
          - >-
            sleep 300 & echo $! >> @SCRATCH@/pids.tmp;
            sleep 300 & echo $! >> @SCRATCH@/pids.tmp;
            echo $$ >> @SCRATCH@/pids.tmp; mv @SCRATCH@/pids.tmp @SCRATCH@/pids; wait
        timeout: 1s
"""


def test_timeout_kills_the_whole_process_tree(engine: EngineHarness) -> None:
    engine.write(TIMEOUT)

    run = engine.run("p")

    pids = [int(p) for p in (engine.scratch / "pids").read_text().split()]
    engine.pids_to_reap += pids
    assert len(pids) == 3
    assert run.status == "failed"
    step = engine.steps(run.id)["hang"]
    assert step.status == "failed"
    assert step.message == "timed out after 1s; the process tree was killed"
    (attempt,) = engine.attempts(run.id, "hang")
    assert attempt.status == "timed-out"
    assert attempt.pid == pids[-1]
    assert [pid for pid in pids if not process_gone(pid)] == []
