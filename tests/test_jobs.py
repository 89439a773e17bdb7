"""The job manager: a queue in SQLite, one job at a time, graceful cancel, restart recovery, resume.

Jobs run `tests/helpers/job_trainer.py`, a real subprocess that follows the trainer contract with
sleeps instead of model code, so these tests take seconds; the real trainers are exercised by their
own tests and the browser test.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from spatial.jobs import Actor, JobError, JobManager, PermissionDenied, config_to_args

ADMIN = Actor("alice", is_admin=True)
VISITOR = Actor("bob", is_admin=False)
TRAINERS = {"toy": "tests.helpers.job_trainer"}


@pytest.fixture
def manager(tmp_path):
    m = JobManager(tmp_path, trainers=TRAINERS, cancel_grace_s=3, poll_s=0.1, use_accelerate=False)
    yield m
    m.close()
    for job in m.list(ADMIN):
        if job.status in ("running", "cancelling") and job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for(manager, job_id, statuses, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = manager.get(job_id, ADMIN)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job stayed {manager.get(job_id, ADMIN).status}")


def assert_exits(proc, timeout=10):
    # A killed orphan can stay a zombie where PID 1 does not reap (as in CI's container): it runs no more.
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {proc.pid} is still running")


def test_a_job_runs_to_success_with_progress_metrics_log_and_checkpoints(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 4, "step_seconds": 0.1})
    assert job.status == "queued"
    job = wait_for(manager, job.id, ("succeeded", "failed"))
    assert job.status == "succeeded" and job.exit_code == 0
    assert manager.progress(job.id, ADMIN) == 1.0
    assert [m["step"] for m in manager.metrics(job.id, ADMIN)] == [1, 2, 3, 4]
    assert "done" in manager.log_tail(job.id, ADMIN)
    paths = [c["path"] for c in manager.checkpoints("toy")]
    assert paths[0].endswith("checkpoint-4") and paths[-1].endswith("final")


def test_one_job_at_a_time_the_rest_wait_in_order(manager):
    a = manager.submit(ADMIN, "toy", {"steps": 3, "step_seconds": 0.3})
    b = manager.submit(ADMIN, "toy", {"steps": 1, "step_seconds": 0.1})
    wait_for(manager, a.id, ("running",))
    assert manager.get(b.id, ADMIN).status == "queued" and manager.gpu_busy()
    a = wait_for(manager, a.id, ("succeeded",))
    b = wait_for(manager, b.id, ("succeeded",))
    assert b.started >= a.finished


def test_a_failing_job_is_marked_failed_with_the_error_line(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 5, "step_seconds": 0.05, "fail_at": 2})
    job = wait_for(manager, job.id, ("failed",))
    assert job.exit_code == 3 and "planned failure" in job.error


def test_cancel_is_graceful_the_trainer_saves_then_resume_continues(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 40, "step_seconds": 0.1})
    wait_for(manager, job.id, ("running",))
    while not manager.metrics(job.id, ADMIN):
        time.sleep(0.05)
    manager.cancel(job.id, ADMIN)
    job = wait_for(manager, job.id, ("cancelled",))
    assert "saved and stopping" in manager.log_tail(job.id, ADMIN)
    saved = max(c["step"] for c in manager.checkpoints("toy") if c["job"] == job.id)
    manager.resume(job.id, ADMIN)
    job = wait_for(manager, job.id, ("succeeded",), timeout=90)
    steps = [m["step"] for m in manager.metrics(job.id, ADMIN)]
    assert f"resuming from step {saved}" in manager.log_tail(job.id, ADMIN, lines=200)
    assert steps[-1] == 40 and steps.count(saved + 1) == 1


def test_a_job_stopped_by_a_signal_from_outside_the_app_is_failed_and_resumable_not_succeeded(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 40, "step_seconds": 0.1})
    job = wait_for(manager, job.id, ("running",))
    while not manager.metrics(job.id, ADMIN):
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGTERM)  # the trainer saves and exits 0, but its run is not done
    job = wait_for(manager, job.id, ("failed",))
    assert job.exit_code == 0 and "resume it" in job.error
    manager.resume(job.id, ADMIN)
    assert wait_for(manager, job.id, ("succeeded",), timeout=90).status == "succeeded"


def test_a_forced_kill_of_a_job_without_a_process_never_reaches_the_apps_own_children(manager):
    import subprocess
    import sys

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # a child of "the app"
    try:
        job = manager.submit(ADMIN, "toy", {"steps": 1})
        wait_for(manager, job.id, ("succeeded",))
        manager._set(job.id, status="cancelling", pid=None)  # e.g. reaped and resumed: no process yet
        manager._force_kill_after(job.id, 0)
        time.sleep(1.0)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_cancel_forces_a_stuck_job_and_its_whole_process_tree_ends(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 200, "step_seconds": 0.1, "ignore_sigterm": True})
    job = wait_for(manager, job.id, ("running",))
    pid = job.pid
    manager.cancel(job.id, ADMIN)
    assert manager.get(job.id, ADMIN).status == "cancelling"
    wait_for(manager, job.id, ("cancelled",), timeout=30)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_cancel_kills_descendants_that_left_the_job_s_process_group(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 200, "step_seconds": 0.1, "ignore_sigterm": True,
                                        "detached_child": True})  # fmt: skip
    job = wait_for(manager, job.id, ("running",))
    pid_file = Path(job.run_dir) / "child.pid"
    deadline = time.time() + 30
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    child = psutil.Process(int(pid_file.read_text()))
    try:
        manager.cancel(job.id, ADMIN)
        wait_for(manager, job.id, ("cancelled",), timeout=30)
        assert_exits(child)  # though it ignored SIGTERM and sat in a session of its own
    finally:
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            child.kill()


def test_a_job_whose_leader_crashes_leaves_no_worker_running(manager):
    # As when accelerate's launcher dies: its workers sit in sessions of their own, re-parented.
    job = manager.submit(ADMIN, "toy", {"steps": 200, "step_seconds": 0.3, "fail_at": 8, "detached_child": True})
    job = wait_for(manager, job.id, ("running",))
    pid_file = Path(job.run_dir) / "child.pid"
    deadline = time.time() + 30
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    child = psutil.Process(int(pid_file.read_text()))
    try:
        wait_for(manager, job.id, ("failed",), timeout=30)
        assert_exits(child)
    finally:
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            child.kill()


def test_cancelling_again_stops_a_job_at_once_instead_of_waiting_for_its_checkpoint(tmp_path):
    m = JobManager(tmp_path, trainers=TRAINERS, cancel_grace_s=600, poll_s=0.1, use_accelerate=False)
    try:
        job = wait_for(m, m.submit(ADMIN, "toy", {"steps": 400, "step_seconds": 0.1, "ignore_sigterm": True}).id,
                       ("running",))  # fmt: skip
        while not m.metrics(job.id, ADMIN):  # past start-up: SIGTERM is being ignored now
            time.sleep(0.1)
        m.cancel(job.id, ADMIN)
        time.sleep(1)
        assert m.get(job.id, ADMIN).status == "cancelling"  # SIGTERM ignored; the grace period is long
        m.cancel(job.id, ADMIN)
        assert wait_for(m, job.id, ("cancelled",), timeout=15).status == "cancelled"
    finally:
        m.close()


def test_a_cancel_interrupted_by_an_app_restart_still_ends_in_a_kill(tmp_path):
    first = JobManager(tmp_path, trainers=TRAINERS, cancel_grace_s=600, poll_s=0.1, use_accelerate=False)
    job = wait_for(first, first.submit(ADMIN, "toy", {"steps": 400, "step_seconds": 0.1, "ignore_sigterm": True}).id,
                   ("running",))  # fmt: skip
    while not first.metrics(job.id, ADMIN):
        time.sleep(0.1)
    first.cancel(job.id, ADMIN)
    first.close()  # the app goes down with the job still saving (here: ignoring SIGTERM)
    second = JobManager(tmp_path, trainers=TRAINERS, cancel_grace_s=1, poll_s=0.1, use_accelerate=False)
    try:
        assert second.get(job.id, ADMIN).status == "cancelling"
        assert wait_for(second, job.id, ("cancelled",), timeout=20).status == "cancelled"
        assert not psutil.pid_exists(job.pid) or psutil.Process(job.pid).status() == psutil.STATUS_ZOMBIE
    finally:
        second.close()


def test_a_job_being_cancelled_that_ended_while_the_app_was_down_is_cancelled_not_failed(tmp_path):
    first = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    job = first.submit(ADMIN, "toy", {"steps": 1})
    first._set(job.id, status="cancelling", pid=2**22 + 12345, pid_created=0.0)  # a process long gone
    first.close()
    second = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    try:
        assert second.get(job.id, ADMIN).status == "cancelled"
    finally:
        second.close()


def test_a_job_that_finished_while_the_app_was_down_is_succeeded_not_failed(tmp_path):
    first = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    job = first.submit(ADMIN, "toy", {"steps": 1})
    first._set(job.id, status="running", pid=2**22 + 12345, pid_created=0.0)  # a process long gone
    first.close()
    (Path(job.run_dir) / "final").mkdir(exist_ok=True)  # ... which got to its end
    second = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    try:
        assert second.get(job.id, ADMIN).status == "succeeded"
    finally:
        second.close()


@pytest.mark.parametrize("setting", ["output_dir", "checkpoint_dir", "resume"])
def test_where_a_run_writes_and_whether_it_resumes_are_the_managers_to_decide(manager, setting):
    with pytest.raises(JobError, match=f"{setting}: set by the job manager"):
        manager.submit(ADMIN, "toy", {"steps": 1, setting: "elsewhere"})
    assert manager.list(ADMIN) == []


def test_a_queued_job_that_cannot_be_prepared_fails_alone_and_the_queue_goes_on(manager):
    broken = manager.submit(ADMIN, "toy", {"steps": 1})
    manager._set(broken.id, run_dir=str(Path(broken.run_dir) / "deleted" / "folder"))  # no log can be opened there
    after = manager.submit(ADMIN, "toy", {"steps": 1})
    assert "could not start" in wait_for(manager, broken.id, ("failed",)).error
    assert wait_for(manager, after.id, ("succeeded",)).status == "succeeded"


def test_a_database_from_before_the_queued_column_is_upgraded_in_place(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.execute("""CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, config TEXT NOT NULL,
        status TEXT NOT NULL, run_dir TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, pid INTEGER,
        pid_created REAL, exit_code INTEGER, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        resume INTEGER NOT NULL DEFAULT 0)""")
    (tmp_path / "runs" / "old").mkdir(parents=True)
    db.execute("INSERT INTO jobs (id, owner, kind, config, status, run_dir, created) VALUES (?,?,?,?,?,?,?)",
               ("old", "alice", "toy", '{"steps": 1}', "queued", str(tmp_path / "runs" / "old"), 1.0))
    db.commit()
    db.close()
    m = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    try:
        assert wait_for(m, "old", ("succeeded",)).status == "succeeded"  # the old queued job still runs
    finally:
        m.close()


@pytest.mark.parametrize("grace", [float("nan"), -1.0])
def test_a_grace_period_that_is_not_seconds_is_refused(tmp_path, grace):
    with pytest.raises(ValueError, match="cancel_grace_s"):
        JobManager(tmp_path, trainers=TRAINERS, cancel_grace_s=grace, use_accelerate=False)


def test_a_job_that_finishes_while_its_cancel_is_pending_counts_as_succeeded(manager):
    job = wait_for(manager, manager.submit(ADMIN, "toy", {"steps": 3, "step_seconds": 0.3}).id, ("running",))
    manager._set(job.id, status="cancelling")  # as if SIGTERM arrived too late to stop the last step
    assert wait_for(manager, job.id, ("succeeded", "cancelled")).status == "succeeded"


def test_an_adopted_reward_run_that_saved_its_model_counts_as_succeeded(tmp_path):
    first = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    job = first.submit(ADMIN, "toy", {"steps": 10, "step_seconds": 0.2, "finish": "model"})
    job = wait_for(first, job.id, ("running",))
    first.close()  # adopted by the next manager, which cannot read the exit code of a process it did not start
    second = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    try:
        assert wait_for(second, job.id, ("succeeded", "failed"), timeout=60).status == "succeeded"
    finally:
        second.close()


def test_a_resumed_job_waits_behind_jobs_queued_before_it(manager):
    first = manager.submit(ADMIN, "toy", {"steps": 40, "step_seconds": 0.1})
    wait_for(manager, first.id, ("running",))
    while not manager.metrics(first.id, ADMIN):
        time.sleep(0.1)
    manager.cancel(first.id, ADMIN)
    wait_for(manager, first.id, ("cancelled",))
    blocker = manager.submit(ADMIN, "toy", {"steps": 3, "step_seconds": 0.3})
    wait_for(manager, blocker.id, ("running",))
    waiting = manager.submit(ADMIN, "toy", {"steps": 1})
    manager.resume(first.id, ADMIN)  # queued after `waiting`, though created long before it
    wait_for(manager, first.id, ("succeeded",))
    assert manager.get(waiting.id, ADMIN).started < manager.get(first.id, ADMIN).started


def test_cancelling_a_queued_job_never_starts_it(manager):
    a = manager.submit(ADMIN, "toy", {"steps": 3, "step_seconds": 0.3})
    b = manager.submit(ADMIN, "toy", {"steps": 1})
    manager.cancel(b.id, ADMIN)
    wait_for(manager, a.id, ("succeeded",))
    time.sleep(0.5)
    b = manager.get(b.id, ADMIN)
    assert b.status == "cancelled" and b.started is None


def test_a_second_manager_on_the_same_folder_is_refused_and_the_first_keeps_scheduling(manager, tmp_path):
    # Two schedulers on one queue would each start its next job; the second is told who holds it.
    with pytest.raises(JobError, match=rf"in use by another Spatial Studio app \(pid {os.getpid()}\).*SPATIAL_DATA_DIR"):
        JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    assert wait_for(manager, manager.submit(ADMIN, "toy", {"steps": 1}).id, ("succeeded",)).status == "succeeded"
    manager.close()
    JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False).close()  # free once closed


def test_the_folder_is_free_again_once_the_app_holding_it_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from spatial.jobs import JobManager; "
         f"JobManager({str(tmp_path)!r}, use_accelerate=False); print('ready', flush=True); time.sleep(600)"],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(JobError, match=rf"pid {holder.pid}\b"):
            JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel lets go of the lock
        holder.wait()
    JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False).close()


def test_workers_a_job_left_while_the_app_was_down_are_ended_when_it_comes_back(tmp_path):
    # The app dies; then the job's leader crashes, leaving a worker in a session of its own (as
    # accelerate's workers are). The restarted app must end that worker before the next job starts.
    app = (f"import sys, time; sys.path.insert(0, {str(Path.cwd())!r})\n"
           "from spatial.jobs import Actor, JobManager\n"
           f"m = JobManager({str(tmp_path)!r}, trainers={TRAINERS!r}, poll_s=0.1, use_accelerate=False)\n"
           "j = m.submit(Actor('alice', True), 'toy', {'steps': 200, 'step_seconds': 0.3, 'fail_at': 8, "
           "'detached_child': True})\nprint(j.id, flush=True)\ntime.sleep(600)\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", app], stdout=subprocess.PIPE, text=True)
    job_id = proc.stdout.readline().strip()
    pid_file = tmp_path / "runs" / job_id / "child.pid"
    deadline = time.time() + 30
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    child = psutil.Process(int(pid_file.read_text()))
    try:
        time.sleep(1.0)  # the app's scheduler has seen the worker
        proc.kill()
        proc.wait()
        with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
            leader = db.execute("SELECT pid FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
        deadline = time.time() + 30
        while psutil.pid_exists(leader) and psutil.Process(leader).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline
            time.sleep(0.2)
        assert child.is_running()  # nothing has ended it yet
        manager = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
        try:
            assert manager.get(job_id, ADMIN).status == "failed"
            assert_exits(child)
        finally:
            manager.close()
    finally:
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            child.kill()


def test_restart_adopts_a_live_job_and_fails_an_orphan(tmp_path):
    first = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    live = first.submit(ADMIN, "toy", {"steps": 15, "step_seconds": 0.2})
    live = wait_for(first, live.id, ("running",))
    first.close()  # the app goes away; the job's process keeps running
    # A second job whose process died while the app was down.
    second = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
    try:
        orphan = second.submit(ADMIN, "toy", {"steps": 1})
        second._set(orphan.id, status="running", pid=live.pid + 10**6, pid_created=0.0)
        second.close()
        third = JobManager(tmp_path, trainers=TRAINERS, poll_s=0.1, use_accelerate=False)
        assert third.get(orphan.id, ADMIN).status == "failed"
        assert "restarted" in third.get(orphan.id, ADMIN).error
        assert third.get(live.id, ADMIN).status == "running"
        assert wait_for(third, live.id, ("succeeded", "failed"), timeout=60).status == "succeeded"
        third.close()
    finally:
        try:
            os.killpg(live.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_non_admins_cannot_start_cancel_or_see_others_jobs(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 1})
    with pytest.raises(PermissionDenied):
        manager.submit(VISITOR, "toy", {"steps": 1})
    with pytest.raises(PermissionDenied):
        manager.cancel(job.id, VISITOR)
    with pytest.raises(JobError):
        manager.get(job.id, VISITOR)
    assert manager.list(VISITOR) == [] and manager.list(Actor(None)) == []


@pytest.mark.parametrize("config", [{"bad-name": 1}, {"x; rm -rf /": 1}, {"Upper": 2}])
def test_setting_names_are_validated_before_anything_runs(manager, config):
    with pytest.raises(JobError, match="invalid setting name"):
        manager.submit(ADMIN, "toy", config)
    assert manager.list(ADMIN) == []


def test_unknown_kinds_are_refused(manager):
    with pytest.raises(JobError, match="unknown job kind"):
        manager.submit(ADMIN, "../../etc", {})


def test_config_becomes_argv_without_secrets_in_it():
    assert config_to_args({"lr": 0.5, "ema": True, "ks": [1, 2], "unset": None}) == [
        "--lr", "0.5", "--ema", "true", "--ks", "1,2"]  # fmt: skip


def test_tokens_are_redacted_from_log_tails(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 1})
    wait_for(manager, job.id, ("succeeded",))
    with open(os.path.join(job.run_dir, "log.txt"), "a") as f:
        f.write("using token hf_abcdefghijklmnopqrstuvwxyz\n")
    assert "hf_abcdefghijkl" not in manager.log_tail(job.id, ADMIN)


def test_a_log_tail_shows_lines_not_progress_redraws_and_never_a_cut_token(manager):
    job = manager.submit(ADMIN, "toy", {"steps": 1})
    wait_for(manager, job.id, ("succeeded",))
    token_line = "use hf_" + "k" * 40 + "abcdefghijklmnop\n"
    last = "filler\ngrpo:  10%\rgrpo:  20%\rgrpo:  30%\nthe last line\n"
    after = 64_000 - 20 - len(token_line)  # the 64 kB window read then starts 20 bytes into the token line
    padding = after - len(last)
    with open(os.path.join(job.run_dir, "log.txt"), "w") as f:
        f.write("start\n" + token_line + ("z" * 99 + "\n") * (padding // 100) + "z" * (padding % 100 - 1) + "\n" + last)
    tail = manager.log_tail(job.id, ADMIN, lines=3)
    assert tail.splitlines() == ["filler", "grpo:  30%", "the last line"]
    assert "abcdefghijklmnop" not in manager.log_tail(job.id, ADMIN, lines=10_000)


@pytest.mark.slow
def test_jobs_run_under_accelerate_launch_and_cancel_reaches_the_worker(tmp_path):
    m = JobManager(tmp_path, trainers=TRAINERS, cancel_grace_s=30, poll_s=0.1, use_accelerate=True)
    try:
        ok = m.submit(ADMIN, "toy", {"steps": 2, "step_seconds": 0.1})
        assert "accelerate.commands.launch" in m.command(m.get(ok.id, ADMIN))
        assert wait_for(m, ok.id, ("succeeded", "failed"), timeout=120).status == "succeeded"
        # Saving takes longer than the 5 s accelerate's launcher gives its workers once it is signalled.
        long = m.submit(ADMIN, "toy", {"steps": 400, "step_seconds": 0.1, "save_seconds": 7})
        wait_for(m, long.id, ("running",), timeout=60)
        while not m.metrics(long.id, ADMIN):
            time.sleep(0.1)
        m.cancel(long.id, ADMIN)
        assert wait_for(m, long.id, ("cancelled",), timeout=60).status == "cancelled"
        assert "saved and stopping" in m.log_tail(long.id, ADMIN, lines=100)
    finally:
        m.close()
