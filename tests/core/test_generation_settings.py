"""The draft preset and the speed settings' rules (seethrough_core.generation_settings)."""

import pytest

from seethrough_core.generation_settings import GenerationSettings, SettingError, draft_size
from seethrough_core.limits import DRAFT_SIDE, DRAFT_STEP_CACHE, MIN_SIDE, SIDE_MULTIPLE, side_problem


@pytest.mark.parametrize(
    ("size", "draft"),
    [
        ((1024, 1024), (512, 512)),
        ((1024, 576), (512, 288)),
        ((640, 384), (512, 304)),  # 307.2 rounds to the nearest multiple of 16
        ((2048, 256), (512, 256)),  # never under the smallest side
        ((512, 512), (512, 512)),
        ((256, 256), (256, 256)),  # already small: unchanged, never enlarged
    ],
)
def test_draft_size_keeps_the_aspect_within_the_draft_side(size, draft):
    assert draft_size(*size) == draft
    assert all(side_problem(side) is None for side in draft)
    assert max(draft) <= max(DRAFT_SIDE, MIN_SIDE) and all(side % SIDE_MULTIPLE == 0 for side in draft)


def test_the_draft_preset_changes_the_size_and_speed_options_only():
    settings = GenerationSettings("street", ["a car"], 1024, 768, 7, 28, 3.5, 1)
    draft = settings.draft()
    assert (draft.width, draft.height, draft.condition_cache, draft.step_cache) == (
        512, 384, True, DRAFT_STEP_CACHE,
    )  # fmt: skip
    assert (draft.seed, draft.steps, draft.guidance, draft.descriptions) == (7, 28, 3.5, ["a car"])
    draft.check()


@pytest.mark.parametrize(
    ("field", "value"),
    [("step_cache", -0.01), ("step_cache", 1.01), ("step_cache", float("nan")), ("step_cache", True),
     ("condition_cache", "yes"), ("condition_cache", 0)],
)  # fmt: skip
def test_speed_settings_out_of_their_rules_name_the_field(field, value):
    settings = GenerationSettings("street", ["a car"], 512, 512, 1, **{field: value})
    with pytest.raises(SettingError) as caught:
        settings.check()
    assert caught.value.field == field


def test_absent_speed_settings_mean_the_servers_default():
    settings = GenerationSettings("street", ["a car"], 512, 512, 1)
    assert settings.condition_cache is None and settings.step_cache is None
    settings.check()
    GenerationSettings("street", ["a car"], 512, 512, 1, condition_cache=False, step_cache=0).check()
