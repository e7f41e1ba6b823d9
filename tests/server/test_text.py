"""Prompt tokenisation: call_ids from T5 offsets, the 512-token limit, encoder outputs.

The call_ids logic runs on the tiny in-code SentencePiece-style tokenizer (the tokens at call_ids
must decode to exactly each description), and on the reference example with the real T5 v1.1
vocabulary cut down to that prompt's pieces (tests/assets/README.md).
"""

from pathlib import Path

import pytest
import torch

from inference_server.model_errors import PromptTooLongError, RequestError
from inference_server.text import T5_MAX_TOKENS, tokenize_for_t5
from inference_server.tiny import tiny_t5_tokenizer
from seethrough_core.prompt import compose_prompt

REFERENCE_SUBJECTS = [
    "mars rover",
    "astronaut",
    "alien standing on ground",
    "spaceship",
    "blue neon robotic dog with slight glow",
]
REFERENCE_SCENE = "on mars, sci-fi background, scary."


@pytest.fixture(scope="module")
def t5_tokenizer():
    return tiny_t5_tokenizer()


def test_call_ids_decode_to_each_description(t5_tokenizer):
    composed = compose_prompt(REFERENCE_SCENE, REFERENCE_SUBJECTS)
    tokens = tokenize_for_t5(t5_tokenizer, composed)
    decoded = [t5_tokenizer.decode([tokens.input_ids[i] for i in ids]) for ids in tokens.call_ids]
    assert decoded == REFERENCE_SUBJECTS


def test_call_ids_take_every_subword_and_nothing_else(t5_tokenizer):
    composed = compose_prompt(REFERENCE_SCENE, REFERENCE_SUBJECTS)
    tokens = tokenize_for_t5(t5_tokenizer, composed)
    pieces = t5_tokenizer.convert_ids_to_tokens(tokens.input_ids)
    assert [pieces[i] for i in tokens.call_ids[0]] == ["▁mar", "s", "▁rover"]
    assert [pieces[i] for i in tokens.call_ids[3]] == ["▁space", "ship"]
    # same structure as the reference example [[4..7],[9],[11..14],[16,17],[19..25]]: contiguous runs
    # separated by exactly one "and" token, no EOS
    for ids in tokens.call_ids:
        assert ids == list(range(ids[0], ids[-1] + 1))
    for left, right in zip(tokens.call_ids, tokens.call_ids[1:], strict=False):
        assert right[0] == left[-1] + 2 and pieces[left[-1] + 1] == "▁and"
    eos = len(tokens.input_ids) - 1
    assert pieces[eos] == "</s>" and all(eos not in ids for ids in tokens.call_ids)


def test_bare_word_marker_belongs_to_the_description(t5_tokenizer):
    # "é" has no "▁é" piece, so the description starts with a lone "▁" token, as T5 does for some words
    composed = compose_prompt("at night", ["émile car", "dog"])
    tokens = tokenize_for_t5(t5_tokenizer, composed)
    pieces = t5_tokenizer.convert_ids_to_tokens(tokens.input_ids)
    first = tokens.call_ids[0][0]
    assert pieces[first] == "▁" and pieces[first - 1] == "▁of"
    assert [pieces[i] for i in tokens.call_ids[1]] == ["▁dog"]


def test_too_long_scene_prompt_is_rejected_with_counts(t5_tokenizer):
    composed = compose_prompt("dog " * 600, ["red car"])
    with pytest.raises(PromptTooLongError) as caught:
        tokenize_for_t5(t5_tokenizer, composed)
    error = caught.value
    assert isinstance(error, RequestError) and error.field == "scene_prompt"
    assert error.token_count > T5_MAX_TOKENS and error.limit == T5_MAX_TOKENS
    assert str(error.token_count) in str(error) and "512" in str(error) and "Shorten" in str(error)


def test_too_long_descriptions_are_named(t5_tokenizer):
    composed = compose_prompt("at night", ["red car " * 100, "red car " * 150, "red car " * 100])
    with pytest.raises(PromptTooLongError) as caught:
        tokenize_for_t5(t5_tokenizer, composed)
    assert caught.value.field == "descriptions[1]"  # the longest one


def test_prompt_of_exactly_the_limit_passes(t5_tokenizer):
    base = len(tokenize_for_t5(t5_tokenizer, compose_prompt("", ["red car"])).input_ids)
    fits = compose_prompt("dog " * (T5_MAX_TOKENS - base), ["red car"])
    assert len(tokenize_for_t5(t5_tokenizer, fits).input_ids) == T5_MAX_TOKENS
    with pytest.raises(PromptTooLongError):
        tokenize_for_t5(t5_tokenizer, compose_prompt("dog " * (T5_MAX_TOKENS - base + 1), ["red car"]))


def test_encoder_outputs(tiny_pipeline):
    composed = compose_prompt(REFERENCE_SCENE, REFERENCE_SUBJECTS)
    encoding = tiny_pipeline.prompt_encoder.encode(composed, torch.float32)
    assert encoding.prompt == composed.text
    assert encoding.prompt_embeds.shape == (1, T5_MAX_TOKENS, 32)
    assert encoding.pooled_embeds.shape == (1, 32)
    assert encoding.token_count == len(tokenize_for_t5(tiny_pipeline.tokenizer_2, composed).input_ids)
    other = tiny_pipeline.prompt_encoder.encode(compose_prompt("at night", ["red car"]), torch.float32)
    assert not torch.equal(encoding.pooled_embeds, other.pooled_embeds)


def test_call_ids_match_the_reference_example_with_the_real_t5_vocabulary():
    """The reference page's example, on the real T5 v1.1 segmentation (tests/assets/README.md)."""
    from transformers import T5TokenizerFast

    path = Path(__file__).parents[1] / "assets" / "t5_v1_1_reference_example_tokenizer.json"
    tokenizer = T5TokenizerFast(tokenizer_file=str(path))
    tokens = tokenize_for_t5(tokenizer, compose_prompt(REFERENCE_SCENE, REFERENCE_SUBJECTS))
    assert tokens.call_ids == [[4, 5, 6, 7], [9], [11, 12, 13, 14], [16, 17], list(range(19, 26))]
    pieces = tokenizer.convert_ids_to_tokens(tokens.input_ids)
    assert "<unk>" not in pieces  # every piece of the prompt is in the cut-down vocabulary
    assert [pieces[i] for i in tokens.call_ids[0]] == ["▁mars", "▁", "r", "over"]  # the lone "▁" counts
