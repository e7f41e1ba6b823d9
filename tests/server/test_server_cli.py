"""`seethrough serve`: address checks before any model loads, and a real server process end to end."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from server_support import random_lora_for

from inference_server.lora import save_seethrough_lora
from inference_server.pipeline import SeeThroughPipeline
from inference_server.server import SeeThroughServer, ServerConfig
from inference_server.weights import file_sha256
from seethrough.cli import build_parser
from seethrough.serve_command import _pipeline_loader, add_serve_arguments, run_serve
from seethrough_core.client import SeeThroughClient, ServerError, ServerUnavailableError
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.protocol import ErrorCode, GenerateRequest
from seethrough_core.server_process import free_loopback_port as free_port

pytestmark = pytest.mark.slow  # starts server processes

REPO = Path(__file__).resolve().parents[2]


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="seethrough serve")
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_seethrough_command_dispatches_serve_here():
    args = build_parser().parse_args(["serve", "--tiny", "--bind", "tcp://127.0.0.1:6000"])
    assert args.handler == ("serve_command", "serve")
    assert (args.tiny, args.bind, args.memory, args.allow_remote) == (
        True,
        "tcp://127.0.0.1:6000",
        "full",
        False,
    )


def test_model_or_tiny_is_required():
    with pytest.raises(SystemExit):
        serve_args()
    with pytest.raises(SystemExit):
        serve_args("--tiny", "--model", "x")


def test_the_step_cache_flag_takes_a_threshold_in_its_range(capsys):
    assert serve_args("--tiny").step_cache is None  # off by default
    assert serve_args("--tiny", "--step-cache", "0").step_cache == 0.0
    assert serve_args("--tiny", "--step-cache", "0.1", "--memory", "16gb").step_cache == 0.1
    for bad in ("1.5", "-0.1", "fast", "nan"):
        with pytest.raises(SystemExit):
            serve_args("--tiny", "--step-cache", bad)
    assert "--step-cache: must be a number in 0..1" in capsys.readouterr().err


def test_style_loras_parse_with_their_scales():
    args = serve_args(
        "--model", "m", "--lora", "l", "--style-lora", "ink.safetensors:0.6", "--style-lora", "b"
    )
    assert args.style_lora == [("ink.safetensors", 0.6), ("b", 1.0)]
    assert serve_args("--tiny", "--style-lora", "C:\\loras\\ink.safetensors").style_lora == [
        ("C:\\loras\\ink.safetensors", 1.0)
    ]
    with pytest.raises(SystemExit):
        serve_args("--tiny", "--style-lora", "ink.safetensors:strong")


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:5555", "tcp://192.168.1.5:5555", "tcp://*:5555"])
def test_non_loopback_bind_is_refused_without_allow_remote(address, capsys):
    assert run_serve(serve_args("--tiny", "--bind", address)) == 2
    message = capsys.readouterr().err
    assert "refusing to listen" in message and "--allow-remote" in message and "authentication" in message


@contextmanager
def loading_server(**config):
    """A real server whose model "loads" until the test ends: it binds and answers info meanwhile."""
    loaded = threading.Event()

    def load():
        loaded.wait()
        raise RuntimeError("the test is over")

    server = SeeThroughServer(load, ServerConfig(**config))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        loaded.set()


def test_allow_remote_lets_a_wildcard_bind_through():
    with loading_server(endpoint="tcp://*:*", allow_remote=True) as server:
        assert re.match(r"tcp://0\.0\.0\.0:\d+$", server.endpoint)
        port = server.endpoint.rsplit(":", 1)[1]
        with SeeThroughClient(f"tcp://127.0.0.1:{port}", timeout_s=10) as client:
            assert client.info().state == "loading"


def test_an_http_address_explains_the_zeromq_form(capsys):
    assert run_serve(serve_args("--tiny", "--bind", "http://localhost:5555")) == 2
    assert "ZeroMQ uses tcp://host:port, e.g. tcp://localhost:5555" in capsys.readouterr().err


def test_a_busy_port_names_the_process_and_what_to_do(capsys):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert run_serve(serve_args("--tiny", "--bind", f"tcp://127.0.0.1:{port}")) == 2
    message = capsys.readouterr().err
    assert "already in use" in message and f"--bind tcp://127.0.0.1:{port + 1}" in message
    if sys.platform == "linux":
        assert f"PID {os.getpid()}" in message


def test_a_busy_port_held_by_a_seethrough_server_says_so(capsys):
    with loading_server(endpoint="tcp://127.0.0.1:*") as server:
        assert run_serve(serve_args("--tiny", "--bind", server.endpoint)) == 2
    assert "A SeeThrough server" in capsys.readouterr().err


def test_lora_is_required_with_a_real_model(capsys):
    assert run_serve(serve_args("--model", "black-forest-labs/FLUX.1-dev")) == 2
    assert "--lora is required" in capsys.readouterr().err


def test_a_model_that_fails_to_load_stops_the_server_with_a_clear_error(tmp_path, capsys):
    args = serve_args("--model", str(tmp_path / "no-flux-here"), "--lora", "x", "--device", "cpu", "--bind",
                      f"tcp://127.0.0.1:{free_port()}")  # fmt: skip
    assert run_serve(args) == 1
    assert "could not be loaded" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_files_are_all_named_before_the_missing_gpu(tmp_path, capsys):
    args = serve_args("--model", str(tmp_path / "no-flux-here"), "--lora", str(tmp_path / "no-lora.st"),
                      "--style-lora", str(tmp_path / "no-style.st:0.5"),
                      "--bind", f"tcp://127.0.0.1:{free_port()}")  # fmt: skip
    assert run_serve(args) == 1
    err = capsys.readouterr().err
    assert "4 problems" in err
    for missing in ("no model folder at", "no-flux-here", "no SeeThrough3D LoRA file at", "no-lora.st",
                    "no style LoRA file at", "no-style.st", "CUDA is not available"):  # fmt: skip
        assert missing in err
    assert err.index("no-flux-here") < err.index("CUDA")  # the files first


def test_the_start_up_log_names_the_lora_by_absolute_path_and_hash(tmp_path, monkeypatch, caplog):
    lora = tmp_path / "mine.safetensors"
    save_seethrough_lora(random_lora_for(SeeThroughPipeline.tiny(seed=0), seed=3), lora)
    monkeypatch.chdir(tmp_path)  # the LoRA given relative to the working folder
    with caplog.at_level(logging.INFO, logger="seethrough.serve"):
        pipeline = _pipeline_loader(serve_args("--tiny", "--lora", "mine.safetensors"), "cpu")()
    sha = file_sha256(lora)[:12]
    assert pipeline.identity["lora"] == str(lora) and pipeline.identity["lora_sha256"] == sha  # into records
    assert f"SeeThrough3D LoRA: {lora} (sha256 {sha}), scale 1" in caplog.text


class ServeProcess:
    """`python -m seethrough serve --tiny` as a user runs it."""

    def __init__(self, port: int) -> None:
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "seethrough", "serve", "--tiny", "--bind", self.endpoint],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, fragment: str, timeout_s: float = 90) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if fragment in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{fragment!r} never appeared in the server's output:\n" + "\n".join(self.lines))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def long_request() -> GenerateRequest:
    import numpy as np

    masks = np.zeros((1, 32, 32), bool)
    masks[0, 4:20, 4:20] = True
    settings = GenerationSettings("on a long road", ["a red car"], 256, 256, seed=None, steps=100)
    return GenerateRequest.for_settings(settings, np.zeros((256, 256, 3), np.uint8), masks)


def test_serve_tiny_logs_ready_serves_and_stops_cleanly_on_ctrl_c():
    server = ServeProcess(free_port())
    try:
        ready = server.wait_for("ready: serving on")
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO", ready), ready  # timestamped
        server.wait_for("loading the tiny pipeline")
        with SeeThroughClient(server.endpoint, timeout_s=10) as client:
            assert client.info().is_noise
            job = client.submit(long_request())
            next(job.events())  # the first step ran: the job is mid-generation
            server.process.send_signal(signal.SIGINT)
            with pytest.raises(ServerError) as info:
                job.wait(timeout_s=60)
            assert info.value.code == ErrorCode.SHUTTING_DOWN
        assert server.process.wait(30) == 0
        server.wait_for("stopped")
    finally:
        server.close()


def test_a_server_that_dies_mid_job_becomes_a_clear_client_error():
    server = ServeProcess(free_port())
    try:
        server.wait_for("ready: serving on")
        with SeeThroughClient(server.endpoint, timeout_s=1.0) as client:
            job = client.submit(long_request())
            next(job.events())
            server.process.kill()
            started = time.monotonic()
            with pytest.raises(ServerUnavailableError) as info:
                job.wait()
            assert time.monotonic() - started < 5
            assert server.endpoint in str(info.value) and "seethrough serve" in str(info.value)
    finally:
        server.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_address_is_served():
    with loading_server(endpoint="tcp://[::1]:*") as server:
        assert server.endpoint.startswith("tcp://[::1]:")
        with SeeThroughClient(server.endpoint, timeout_s=10) as client:
            assert client.info().state == "loading"
