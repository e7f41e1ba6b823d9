"""The training prompt template and description spans (core, no torch)."""

import pytest

from seethrough_core.prompt import compose_prompt

SUBJECTS = [
    "mars rover",
    "astronaut",
    "alien standing on ground",
    "spaceship",
    "blue neon robotic dog with slight glow",
]


def test_template_matches_training_exactly():
    composed = compose_prompt("on mars, sci-fi background, scary.", SUBJECTS)
    assert composed.text == (
        "a photo of mars rover and astronaut and alien standing on ground and spaceship and "
        "blue neon robotic dog with slight glow on mars, sci-fi background, scary."
    )


def test_spans_point_at_each_description():
    composed = compose_prompt("on mars", SUBJECTS)
    assert [composed.text[start:end] for start, end in composed.spans] == SUBJECTS
    starts = [start for start, _ in composed.spans]
    assert starts == sorted(starts) and starts[0] == len("a photo of ")


def test_empty_scene_prompt_leaves_no_trailing_space():
    assert compose_prompt("", ["a red car"]).text == "a photo of a red car"
    assert compose_prompt("   ", ["a red car", "a dog"]).text == "a photo of a red car and a dog"


def test_surrounding_whitespace_is_dropped():
    composed = compose_prompt("  at night ", ["  red car ", "dog"])
    assert composed.text == "a photo of red car and dog at night"
    assert composed.descriptions == ("red car", "dog")
    assert composed.text[slice(*composed.spans[0])] == "red car"


@pytest.mark.parametrize("descriptions", [[], ["car", "  "]])
def test_missing_or_empty_descriptions_are_rejected(descriptions):
    with pytest.raises(ValueError):
        compose_prompt("scene", descriptions)
