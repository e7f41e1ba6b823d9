"""Changing the LoRAs of a running server (`set_lora`): queued behind the jobs sent before it, reported
by `info`, refused whole when a file is missing; `seethrough lora` drives it from the command line.
Real sockets, the real server and the real tiny pipeline; LoRA files with random weights."""

from __future__ import annotations

import logging

import pytest
import torch
from model_comparison import generate_with_latents
from server_support import GatedPipeline, build_request, random_lora_for, running_server, write_style_lora

from inference_server.lora import save_seethrough_lora
from inference_server.model_errors import WeightsNotFoundError
from inference_server.pipeline import SeeThroughPipeline
from seethrough.cli import main
from seethrough_core.client import SeeThroughClient, ServerError
from seethrough_core.protocol import (
    ErrorCode,
    LoraSet,
    ProtocolError,
    SetLoraRequest,
    StyleLoraChoice,
    decode_request,
)


@pytest.fixture(scope="module")
def pipeline():
    return GatedPipeline(SeeThroughPipeline.tiny(seed=0))  # its own: these tests change its LoRAs


@pytest.fixture(scope="module")
def server(pipeline):
    with running_server(pipeline) as server:
        yield server


@pytest.fixture
def lora_file(tmp_path, pipeline):
    path = tmp_path / "seethrough3d.safetensors"
    save_seethrough_lora(random_lora_for(pipeline.inner, seed=7), path)
    return path


def test_set_lora_round_trips_and_is_checked_on_both_ends():
    request = SetLoraRequest(lora="/loras/a.safetensors", style_loras=[StyleLoraChoice("/s.st", 0.7)])
    decoded = decode_request(request.encode())
    assert decoded == request
    with pytest.raises(ProtocolError, match="nothing to change"):
        SetLoraRequest().encode()
    with pytest.raises(ProtocolError) as caught:
        SetLoraRequest(lora_scale=-1.0).encode()
    assert caught.value.field == "lora_scale"
    with pytest.raises(ProtocolError) as caught:
        SetLoraRequest(style_loras=[StyleLoraChoice("")]).encode()
    assert caught.value.field == "style_loras[0].path"


def test_a_lora_change_waits_for_the_jobs_sent_before_it(server, pipeline, lora_file, caplog):
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        before = client.info().lora
        pipeline.hold()
        first = client.submit(build_request("before the change", steps=2))
        pipeline.wait_until_held("before the change")
        change = client.submit(SetLoraRequest(lora=str(lora_file), lora_scale=0.5))
        assert change.queue_position == 1  # behind the running job, not refused
        assert client.info().lora == before  # nothing changed while the job runs
        after = client.submit(build_request("after the change", steps=2))
        with caplog.at_level(logging.INFO, logger="inference_server.worker"):
            pipeline.release()
            result = first.wait()
            (answer,) = change.events()
            later = after.wait()
        assert result.lora == before  # the job sent before the change used the old LoRA
        assert isinstance(answer, LoraSet) and answer.lora["name"] == str(lora_file)
        assert answer.lora["scale"] == 0.5 and len(answer.lora["sha256"]) == 12
        assert later.lora == answer.lora  # the job sent after it used the new one
        assert client.info().lora == answer.lora
    assert f"SeeThrough3D LoRA: {lora_file} (sha256 {answer.lora['sha256']}), scale 0.5" in caplog.text


def test_a_missing_file_refuses_the_whole_change_naming_every_file(server, tmp_path):
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        before = client.info()
        request = SetLoraRequest(
            lora=str(tmp_path / "gone.safetensors"),
            style_loras=[StyleLoraChoice(str(tmp_path / "style-gone.safetensors"), 0.8)],
        )
        with pytest.raises(ServerError) as caught:
            client.set_lora(request)
        after = client.info()
    assert caught.value.code == ErrorCode.LORA_FAILED
    assert "gone.safetensors" in caught.value.message and "style-gone.safetensors" in caught.value.message
    assert "unchanged" in caught.value.message
    assert (after.lora, after.model["style_loras"]) == (before.lora, before.model["style_loras"])


def test_seethrough_lora_set_and_show(server, lora_file, capsys, monkeypatch):
    monkeypatch.chdir(lora_file.parent)  # a relative path is sent as the absolute path of the file here
    address = ["--server", server.endpoint]
    assert main(["lora", "set", *address, "--lora", lora_file.name, "--lora-scale", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "LoRAs changed" in out and f"SeeThrough3D LoRA: {lora_file}, sha256" in out and "scale 0.8" in out
    assert main(["lora", "show", *address]) == 0
    assert f"SeeThrough3D LoRA: {lora_file}" in capsys.readouterr().out
    assert main(["lora", "set", *address]) == 2  # nothing to change: said before connecting
    assert "nothing to change" in capsys.readouterr().err
    assert main(["lora", "set", *address, "--lora", "no-such.safetensors"]) == 1
    assert "no SeeThrough3D LoRA file at" in capsys.readouterr().err


def test_style_loras_swap_in_and_out_and_a_bad_list_changes_nothing(tmp_path, make_request):
    pipeline = SeeThroughPipeline.tiny(seed=0)
    request = make_request(num_inference_steps=2)
    _, plain = generate_with_latents(pipeline, request)
    style = tmp_path / "style.safetensors"
    write_style_lora(style, pipeline, seed=1)
    pipeline.swap_loras(style_loras=[(str(style), 0.7)])
    _, styled = generate_with_latents(pipeline, request)
    assert (styled - plain).abs().max() > 1e-3
    assert [entry["path"] for entry in pipeline.identity["style_loras"]] == [str(style)]
    with pytest.raises(WeightsNotFoundError):  # a list with a missing file: the loaded one stays
        pipeline.swap_loras(style_loras=[(str(style), 1.0), (str(tmp_path / "gone.safetensors"), 1.0)])
    assert [(e["path"], e["scale"]) for e in pipeline.identity["style_loras"]] == [(str(style), 0.7)]
    _, again = generate_with_latents(pipeline, request)
    torch.testing.assert_close(again, styled, rtol=1e-4, atol=1e-5)
    pipeline.swap_loras(style_loras=[])  # removed: the plain model again
    assert pipeline.identity["style_loras"] == []
    _, unstyled = generate_with_latents(pipeline, request)
    torch.testing.assert_close(unstyled, plain, rtol=1e-4, atol=1e-5)
