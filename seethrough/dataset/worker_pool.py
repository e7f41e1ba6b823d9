"""Background Blender processes (dataset_render.blender_worker), each fed by a thread of this process.

Each worker reads JSON requests on stdin and answers one JSON line each; its log (Blender's messages)
goes to a file. A worker that dies answers its current job with a failure naming its log.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

WORKER_MODULE = "blender_addon.dataset_render.blender_worker"
_STOP_S = 5.0


class WorkerError(RuntimeError):
    """A worker process ended or answered nonsense."""


@dataclass
class JobResult:
    job: dict
    reply: dict
    worker: int


class Worker:
    def __init__(self, index: int, log_path: Path) -> None:
        self.index = index
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            # The environment passes through: PYTHONPATH finds this checkout's packages in the child.
            self.process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                encoding="utf-8",
                env=dict(os.environ),
                # Its own session: Ctrl-C reaches only the main process, which stops the workers itself
                # (a worker whose parent dies sees its input close and exits after its current job).
                start_new_session=True,
            )

    def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._gone()) from None

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise WorkerError(self._gone())
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(f"worker {self.index} answered {line[:200]!r} (see {self.log_path})") from None

    def request(self, message: dict) -> dict:
        self.send(message)
        return self.receive()

    def stop(self) -> None:
        """Close its input (it exits when idle), then end it if it does not."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(_STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _gone(self) -> str:
        code = self.process.poll()
        return f"worker {self.index} stopped (exit code {code}); its log: {self.log_path}"


class WorkerPool:
    """``count`` workers; jobs go to whichever is free; results come back in the order they finish."""

    def __init__(self, count: int, log_dir: Path) -> None:
        self.workers = [Worker(i, log_dir / f"worker_{i}.log") for i in range(count)]
        self.jobs: queue.Queue[dict | None] = queue.Queue()
        self.results: queue.Queue[JobResult] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def broadcast(self, message: dict) -> list[dict]:
        """Send one request to every worker (they work on it in parallel) and collect their replies."""
        for worker in self.workers:
            worker.send(message)
        return [worker.receive() for worker in self.workers]

    def start(self) -> None:
        for worker in self.workers:
            thread = threading.Thread(target=self._serve, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: dict) -> None:
        self.jobs.put(job)

    def alive(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def _serve(self, worker: Worker) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                reply = worker.request(job)
            except WorkerError as exc:
                self.results.put(
                    JobResult(job, {"op": "failed", "id": job.get("id"), "error": str(exc)}, worker.index)
                )
                return  # this worker is gone; the others carry on
            self.results.put(JobResult(job, reply, worker.index))

    def close(self) -> None:
        for _ in self._threads:
            self.jobs.put(None)
        for worker in self.workers:
            worker.stop()

    def kill(self) -> None:
        """Stop at once (Ctrl-C): work in progress is dropped; finished samples are already saved."""
        for worker in self.workers:
            worker.kill()
