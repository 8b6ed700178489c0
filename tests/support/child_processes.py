"""Real child processes for the end-to-end tests that count what they deliver
(tests/e2e/test_child_processes_e2e.py, test_integration_celery.py): their environment and
client, process groups killed whole after a test, and a real Celery worker (prefork) on a
filesystem broker in the test's tmp_path, with no other service."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from accounting import wait_until
from processes import process_group

EXIT_TIMEOUT = 5.0
CLIENT = f"""
from pug import BatchConfig, Pug

def make_client():
    # PUG_BASE_URL (set by the test) is the server; 60 s max_wait: only the exit sends.
    batch = BatchConfig(max_wait=60.0, exit_timeout={EXIT_TIMEOUT})
    return Pug(api_key="prv_children", batch=batch)
"""


def program_env(server_url: str, tmp_path: Path) -> dict[str, str]:
    """The programs' environment: the server, and tmp_path importable (their modules,
    `pug_test_client.make_client` among them)."""
    (tmp_path / "pug_test_client.py").write_text(CLIENT)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PUG_BASE_URL": server_url, "PYTHONPATH": path}


# The head of a tasks module: the Celery app on the filesystem broker in its own folder.
CELERY_APP = """
import os
from pathlib import Path

from celery import Celery
from pug_test_client import make_client

HERE = Path(__file__).parent
app = Celery("tasks", broker="filesystem://")
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(HERE / "broker"),
        "data_folder_out": str(HERE / "broker"),
        "processed_folder": str(HERE / "processed"),
        "control_folder": str(HERE / "control"),
        "store_processed": True,
        "polling_interval": 0.05,
    },
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
)
"""


class CeleryWorker:
    """`celery worker -P prefork -c 2` on a filesystem broker in tmp_path, no result backend,
    running `tasks` (the source of tasks.py, after `CELERY_APP`). A task marks that it ran
    by touching `done/{n}.{pid}`."""

    def __init__(self, tmp_path: Path, env: dict[str, str], tasks: str) -> None:
        self.tmp_path = tmp_path
        self.env = env
        for folder in ("broker", "processed", "control", "done"):
            (tmp_path / folder).mkdir()
        (tmp_path / "tasks.py").write_text(CELERY_APP + tasks)

    def produce(self, program: str) -> None:
        """Run `program` (which sends tasks) in a process of its own, before `running()`:
        kombu's filesystem transport rewrites its exchange table in place on each declare,
        and a sender and a worker at the same time read it half-written (in CI, a sender
        failed, and a worker stopped with an unrecoverable JSONDecodeError)."""
        env = {**self.env, "PUG_BASE_URL": "http://127.0.0.1:9"}  # its own client: unused
        subprocess.run(
            [sys.executable, "-c", program], cwd=self.tmp_path, env=env, check=True, timeout=30
        )

    def send(self, count: int) -> None:
        """Queue `count` tasks `tasks.work` (n = 0 .. count-1)."""
        self.produce(
            f"from tasks import app\nfor n in range({count}): app.send_task('tasks.work', (n,))"
        )

    def done(self) -> dict[int, int]:
        """Which child (pid) ran each task (n) that has run."""
        return {
            int(n): int(pid)
            for n, pid in (p.name.split(".") for p in (self.tmp_path / "done").iterdir())
        }

    @contextlib.contextmanager
    def running(self, *options: str) -> Iterator[subprocess.Popen[str]]:
        args = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork"]
        args += ["-c", "2", "--without-heartbeat", "--without-gossip", "--without-mingle"]
        args += ["-l", "info", *options]
        log = self.tmp_path / "worker.log"
        with log.open("w") as out:
            command = process_group(
                args, cwd=self.tmp_path, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
            with command as worker:
                try:
                    # Yielded once ready: what a test then waits for runs from here on.
                    wait_until(
                        lambda: worker.poll() is not None or " ready." in log.read_text(),
                        "the Celery worker to be ready",
                        timeout=60,
                    )
                    assert worker.poll() is None, "the Celery worker exited at start"
                    yield worker
                except BaseException:
                    print(log.read_text())  # shown with the failure
                    raise

    def warm_shutdown(self, worker: subprocess.Popen[str]) -> None:
        """SIGTERM to the main process: it stops taking tasks, lets the children finish and
        end, then exits."""
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(EXIT_TIMEOUT + 15)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker did not stop after a warm shutdown")
        assert worker.returncode == 0
