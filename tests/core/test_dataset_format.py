"""The dataset's metadata.jsonl: written line by line, read back, errors that name the field."""

import json
from pathlib import Path

import pytest

from seethrough_core.dataset_format import (
    METADATA_NAME,
    DatasetError,
    DatasetSample,
    append_sample,
    read_samples,
)
from seethrough_core.layout import load_layout
from seethrough_core.prompt import compose_prompt


def make_sample(example_layout_path, sample_id: str) -> DatasetSample:
    layout = load_layout(example_layout_path)
    prompt = compose_prompt(layout.scene_prompt, layout.descriptions)
    n = len(layout.boxes)
    return DatasetSample(
        id=sample_id,
        target=f"samples/{sample_id}/target.png",
        oscr=f"samples/{sample_id}/oscr.jpg",
        amodal_masks=[f"samples/{sample_id}/masks/amodal_{i:03d}.png" for i in range(n)],
        visible_masks=[f"samples/{sample_id}/masks/visible_{i:03d}.png" for i in range(n)],
        masks_json=f"samples/{sample_id}/masks.json",
        layout=layout.to_dict(),
        prompt=prompt.text,
        descriptions=list(prompt.descriptions),
        spans=[list(s) for s in prompt.spans],
        visibility=[0.5] * n,
        width=layout.width,
        height=layout.height,
        seed=7,
    )


@pytest.fixture
def example():
    return Path(__file__).resolve().parents[2] / "assets" / "examples" / "street.json"


def test_samples_round_trip_in_order(tmp_path, example):
    written = [make_sample(example, f"{i:06d}") for i in range(3)]
    for sample in written:
        append_sample(tmp_path, sample)
    assert read_samples(tmp_path) == written
    assert read_samples(tmp_path)[1].parsed_layout().descriptions == written[1].descriptions


def test_a_missing_field_is_named_with_its_line(tmp_path, example):
    append_sample(tmp_path, make_sample(example, "a"))
    raw = json.loads(make_sample(example, "b").to_json_line())
    del raw["visible_masks"]
    with open(tmp_path / METADATA_NAME, "a") as f:
        f.write(json.dumps(raw) + "\n")
    with pytest.raises(DatasetError, match=r"jsonl:2: the sample lacks the field\(s\) visible_masks"):
        read_samples(tmp_path)


def test_a_line_cut_short_by_a_crash_is_skipped_then_replaced(tmp_path, example):
    append_sample(tmp_path, make_sample(example, "a"))
    with open(tmp_path / METADATA_NAME, "a") as f:
        f.write(make_sample(example, "b").to_json_line()[:100])  # the crash
    assert [s.id for s in read_samples(tmp_path)] == ["a"]
    append_sample(tmp_path, make_sample(example, "c"))
    assert [s.id for s in read_samples(tmp_path)] == ["a", "c"]


def test_a_folder_without_metadata_says_how_to_make_one(tmp_path):
    with pytest.raises(DatasetError, match="seethrough dataset make"):
        read_samples(tmp_path)
