"""The GPU worker: loads the pipeline, then runs queued jobs one at a time.

ZeroMQ sockets are not thread-safe, so the worker never touches the clients' ROUTER socket. It
sends every outgoing message, already encoded, over its own inproc PAIR socket to the loop
thread, which forwards the frames untouched (inproc passes buffers without copying).

Events on the PAIR socket, as multipart messages:
  [b"ready"]                              the pipeline loaded
  [b"load_failed", utf-8 message]         it did not; the server stops
  [b"send", job_id, *frames]              a progress message for the job's client
  [b"end", job_id, outcome, *frames]      the job is over; outcome b"result" / b"error" carry the
                                          message; b"cancelled" carries nothing (the loop answers
                                          the owner and everyone who asked for the cancel)
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import zmq

from seethrough_core.errors import SeeThroughError
from seethrough_core.generation_settings import SettingError
from seethrough_core.limits import MAX_SEED
from seethrough_core.protocol import (
    ErrorCode,
    ErrorReply,
    Frame,
    LoraSet,
    Progress,
    ProtocolError,
    Result,
    SetLoraRequest,
)

from .job_queue import JobQueue, ServerJob
from .model_errors import GenerationCancelled

if TYPE_CHECKING:  # the pipeline module imports torch; the worker only calls what it is given
    from .pipeline import SeeThroughPipeline, StepInfo

log = logging.getLogger(__name__)


class Worker(threading.Thread):
    def __init__(
        self,
        load_pipeline: Callable[[], SeeThroughPipeline],
        queue: JobQueue,
        context: zmq.Context,
        events_address: str,
        describe: Callable[[SeeThroughPipeline], tuple[dict[str, Any], dict[str, Any] | None]],
    ) -> None:
        # Daemon: a model load cannot be interrupted, and must not keep Ctrl-C from exiting.
        super().__init__(name="seethrough-worker", daemon=True)
        self._load_pipeline = load_pipeline
        self._queue = queue
        self._context = context
        self._events_address = events_address
        self._describe = describe
        self.pipeline: SeeThroughPipeline | None = None  # set before b"ready" is sent

    def run(self) -> None:
        events = self._context.socket(zmq.PAIR)
        events.linger = 2000  # the last messages must reach the loop even as the thread exits
        events.connect(self._events_address)
        try:
            started = time.monotonic()
            try:
                self.pipeline = self._load_pipeline()
            except Exception as exc:
                if not isinstance(exc, SeeThroughError):  # ours explain themselves; others need the trace
                    log.exception("loading the model failed")
                events.send_multipart([b"load_failed", str(exc).encode()])
                return
            log.info("model ready in %.1f s", time.monotonic() - started)
            events.send(b"ready")
            while (job := self._queue.take()) is not None:
                if isinstance(job.request, SetLoraRequest):
                    outcome, frames = self._set_lora(job, job.request, self.pipeline)
                else:
                    outcome, frames = self._run(job, self.pipeline, events)
                self._queue.finish(job)
                events.send_multipart([b"end", job.job_id.encode(), outcome, *frames], copy=False)
        finally:
            events.close()

    def _run(
        self, job: ServerJob, pipeline: SeeThroughPipeline, events: zmq.Socket
    ) -> tuple[bytes, list[Frame]]:
        request = job.request
        started = time.monotonic()
        settings = request.settings
        if settings.seed is None:
            settings = replace(settings, seed=secrets.randbelow(MAX_SEED + 1))
        log.info(
            "job %s started: %d boxes, %dx%d, %d steps, seed %d (waited %.2f s)",
            job.job_id, len(settings.descriptions), settings.width, settings.height, settings.steps,
            settings.seed, started - job.received_at,
        )  # fmt: skip

        def on_step(info: StepInfo) -> None:
            # Checked after every denoising step: a cancel stops the job before the next step,
            # and raising here makes the pipeline skip the VAE decode.
            if job.cancel_event.is_set():
                raise GenerationCancelled
            progress = Progress(
                request.request_id, job.job_id, info.step, info.total, info.elapsed_s, info.preview
            )
            events.send_multipart([b"send", job.job_id.encode(), *progress.encode()], copy=False)

        try:
            # A PNG/JPEG waited encoded in the queue; it is decoded here, off the socket loop.
            condition = request.condition()
        except ProtocolError as exc:
            log.info("job %s: its OSCR image does not decode: %s", job.job_id, exc)
            return b"error", self._error(job, ErrorCode(exc.code), exc.message, exc.field)
        try:
            output = pipeline.generate(settings, condition, request.edit, step_callback=on_step)
        except GenerationCancelled:
            log.info("job %s cancelled after %.2f s", job.job_id, time.monotonic() - started)
            return b"cancelled", []
        except SettingError as exc:  # the pipeline's checks, RequestError included
            log.info("job %s rejected by the model: %s", job.job_id, exc)
            return b"error", self._error(job, ErrorCode.INVALID_FIELD, exc.message, exc.field)
        except Exception as exc:
            log.exception("job %s failed", job.job_id)
            return b"error", self._error(job, ErrorCode.GENERATION_FAILED, _failure_message(exc))
        finished = time.monotonic()
        model, lora = self._describe(pipeline)
        result = Result(
            request_id=request.request_id,
            job_id=job.job_id,
            image=output.image,
            seed=output.seed,
            prompt=output.prompt,
            call_ids=[[int(i) for i in ids] for ids in output.call_ids],
            steps=settings.steps,
            guidance=float(settings.guidance),
            timings={
                "queue_wait_s": started - job.received_at,
                "generation_s": finished - started,
                "total_s": finished - job.received_at,
            },
            model_timings={str(k): float(v) for k, v in output.timings.items()},
            model=model,
            lora=lora,
            is_noise=bool(output.is_noise),
            metadata=request.metadata,
            oscr_jpeg_quality=output.oscr_jpeg_quality,
            steps_computed=output.steps_computed,
            condition_cache=output.condition_cache,
            step_cache=output.step_cache,
        )
        log.info("job %s done in %.2f s", job.job_id, finished - started)
        return b"result", result.encode()

    def _set_lora(
        self, job: ServerJob, request: SetLoraRequest, pipeline: SeeThroughPipeline
    ) -> tuple[bytes, list[Frame]]:
        """Swap the LoRAs between two jobs; a refused change leaves the ones in use as they were."""
        if job.cancel_event.is_set():
            return b"cancelled", []
        started = time.monotonic()
        styles = request.style_loras
        try:
            pipeline.swap_loras(
                request.lora,
                request.lora_scale,
                None if styles is None else [(style.path, style.scale) for style in styles],
            )
        except SeeThroughError as exc:
            log.warning("LoRA change refused; the LoRAs in use are unchanged: %s", exc)
            return b"error", self._error(job, ErrorCode.LORA_FAILED, f"{exc}. The LoRAs in use are unchanged")
        except Exception as exc:
            log.exception("LoRA change failed")
            message = f"the LoRA change failed: {type(exc).__name__}: {exc}"
            return b"error", self._error(job, ErrorCode.SERVER_ERROR, message)
        load_s = time.monotonic() - started
        for line in pipeline.lora_lines():
            log.info("LoRAs changed in %.2f s: %s", load_s, line)
        model, lora = self._describe(pipeline)
        return b"result", LoraSet(request.request_id, job.job_id, model, lora, load_s).encode()

    @staticmethod
    def _error(job: ServerJob, code: ErrorCode, message: str, field: str = "") -> list[Frame]:
        return ErrorReply(code, message, field, job.request.request_id, job.job_id).encode()


def _failure_message(exc: Exception) -> str:
    text = f"generation failed: {type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower():
        text += (
            ". The GPU ran out of memory: try a smaller resolution, restart the server with "
            "--memory offload, or close other programs using the GPU (Blender's Cycles included)"
        )
    return text
