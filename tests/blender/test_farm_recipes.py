"""docs/farm/: the Open Job Description template run by `openjd run`, the Flamenco job type compiled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seethrough_core.layout import Layout, load_layout
from seethrough_core.server_process import ServerProcess

FARM = Path(__file__).resolve().parents[2] / "docs" / "farm"
TEMPLATE = FARM / "seethrough-batch.openjd.yaml"
FLAMENCO_JOB = FARM / "seethrough_batch.js"


def small_layout(prompt: str) -> Layout:
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = [256, 256]
    data["boxes"] = data["boxes"][:2]
    data["scene_prompt"] = prompt
    return Layout.from_dict(data)


@pytest.mark.slow  # renders with Blender, runs a tiny server and four batch processes
def test_the_open_job_description_template_runs_every_shard_then_the_contact_sheets(tmp_path):
    pytest.importorskip("openjd.cli", reason="openjd-cli (in seethrough[dev]) runs the template locally")
    for name in ("dusk", "noon", "night"):
        small_layout(f"on a quiet street at {name}").save(tmp_path / f"{name}.json")
    out = tmp_path / "out"
    # the tasks find `seethrough` (the template's default command) beside this Python
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with ServerProcess.tiny(tmp_path / "server.log") as server:
        parameters = {
            "Inputs": str(tmp_path / "*.json"),
            "OutDir": str(out),
            "Shards": 2,
            "ServerOptions": f"--server {server.endpoint}",
            "BatchOptions": "--seeds 1,2 --steps 2",
        }
        run = subprocess.run(
            [sys.executable, "-m", "openjd", "run", str(TEMPLATE), "--step", "ContactSheets",
             "--run-dependencies", "--job-param", json.dumps(parameters)],
            capture_output=True, text=True, timeout=400, env=env,
        )  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "shard 1/2" in log and "shard 2/2" in log
    for name in ("dusk", "noon", "night"):
        for seed in (1, 2):
            png = out / name / "Camera" / f"0001_{seed}.png"
            assert png.is_file() and png.with_suffix(".json").is_file()
        assert (out / name / "contact_sheet.png").is_file()  # by the last step, which skipped all six
    assert log.count("(already complete)") == 6


def test_the_flamenco_job_type_makes_one_task_per_shard_and_a_last_one_for_the_sheets(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: it compiles the Flamenco job type as Flamenco's manager would")
    # Flamenco's manager runs compileJob with its `author` API; Flamenco itself cannot run here, so this
    # stand-in records the tasks it is given.
    harness = f"""
    const fs = require("fs");
    const tasks = [];
    globalThis.author = {{
      Task: (name, type) => {{
        const task = {{ name, type, commands: [], dependencies: [] }};
        task.addCommand = (command) => task.commands.push(command);
        task.addDependency = (other) => task.dependencies.push(other.name);
        return task;
      }},
      Command: (kind, parameters) => ({{ kind, ...parameters }}),
    }};
    const source = fs.readFileSync({json.dumps(str(FLAMENCO_JOB))}, "utf8");
    eval(source + "; globalThis.compileJob = compileJob; globalThis.JOB_TYPE = JOB_TYPE;");
    const settings = {{}};
    for (const s of JOB_TYPE.settings) if ("default" in s) settings[s.key] = s.default;
    Object.assign(settings, {{ inputs: "/shows/seq010/*.blend", out_dir: "/shows/out", shards: 3,
                               frames: "1-24", consistent: true, lora: "/models/lora.safetensors" }});
    compileJob({{ settings, addTask: (task) => tasks.push(task) }});
    console.log(JSON.stringify(tasks));
    """
    compiled = subprocess.run([node, "-e", harness], capture_output=True, text=True, timeout=60)
    assert compiled.returncode == 0, compiled.stderr
    tasks = json.loads(compiled.stdout)
    assert [t["name"] for t in tasks] == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3", "contact-sheets"]
    common = ["batch", "/shows/seq010/*.blend", "--out", "/shows/out", "--seeds", "42", "--frames", "1-24",
              "--consistent"]  # fmt: skip
    for k, task in enumerate(tasks[:3], start=1):
        (command,) = task["commands"]
        assert command["kind"] == "exec" and command["exe"] == "seethrough"
        model = ["--serve-model", "black-forest-labs/FLUX.1-dev", "--serve-lora", "/models/lora.safetensors"]
        assert command["args"] == [*common, "--shard", f"{k}/3", *model]
    assert tasks[3]["commands"][0]["args"] == common
    assert tasks[3]["dependencies"] == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3"]
    # the command lines the tasks run are ones `seethrough batch` accepts
    from seethrough.cli import build_parser

    for task in tasks:
        build_parser().parse_args(task["commands"][0]["args"])
