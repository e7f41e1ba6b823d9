"""Prompt encoding: T5 sequence embeddings, the CLIP pooled embedding and each box's ``call_ids``.

``call_ids[k]`` are the T5 token positions of description k inside the composed prompt: every
subword token of the description, never the EOS. The condition tokens of box k attend to exactly
these text tokens, so they must match what the checkpoint saw in training.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from seethrough_core.prompt import ComposedPrompt, compose_prompt

from .model_errors import PromptTooLongError, RequestError, SetupError

T5_MAX_TOKENS = 512  # FLUX.1-dev's max_sequence_length; the text stream is always this long
# Encoded prompts the pipeline keeps (batches, variations and edits repeat prompts): 4 MiB each in bf16
PROMPT_CACHE_ENTRIES = 16


@dataclass(frozen=True)
class TokenizedPrompt:
    """The T5 tokens of a prompt (EOS included, no padding) and each description's token positions."""

    input_ids: list[int]
    call_ids: list[list[int]]


@dataclass
class PromptEncoding:
    """Everything the transformer needs from the prompt."""

    prompt: str
    prompt_embeds: torch.Tensor  # [1, T5_MAX_TOKENS, joint_attention_dim]
    pooled_embeds: torch.Tensor  # [1, pooled_projection_dim]
    call_ids: list[list[int]]
    token_count: int  # T5 tokens of the prompt, EOS included


def tokenize_for_t5(tokenizer, composed: ComposedPrompt, limit: int = T5_MAX_TOKENS) -> TokenizedPrompt:
    """Tokenize the prompt with T5's tokenizer and find each description's token positions.

    A token belongs to description k when its character offsets overlap the description's span.
    A token that covers only whitespace (SentencePiece's lone word marker) belongs to the description
    whose first token follows it, as the description's own tokenization starts with it.
    """
    encoded = tokenizer(
        composed.text,
        add_special_tokens=True,
        truncation=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    input_ids: list[int] = list(encoded["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(pair) for pair in encoded["offset_mapping"]]
    special: list[int] = list(encoded["special_tokens_mask"])

    owner = [-1] * len(input_ids)
    for index, (start, end) in enumerate(offsets):
        if special[index] or end <= start:
            continue
        for box, (span_start, span_end) in enumerate(composed.spans):
            if start < span_end and end > span_start:
                owner[index] = box
                break
    for index in range(len(input_ids) - 1):
        start, end = offsets[index]
        is_bare_marker = not special[index] and end > start and composed.text[start:end].strip() == ""
        if owner[index] == -1 and is_bare_marker and owner[index + 1] != -1:
            owner[index] = owner[index + 1]

    if len(input_ids) > limit:
        _raise_too_long(composed, offsets, owner, special, limit)

    call_ids: list[list[int]] = [[] for _ in composed.descriptions]
    for index, box in enumerate(owner):
        if box >= 0:
            call_ids[box].append(index)
    for box, ids in enumerate(call_ids):
        if not ids:
            raise RequestError(f"descriptions[{box}]", "the description produced no T5 tokens")
    return TokenizedPrompt(input_ids=input_ids, call_ids=call_ids)


def _raise_too_long(
    composed: ComposedPrompt,
    offsets: list[tuple[int, int]],
    owner: list[int],
    special: list[int],
    limit: int,
) -> None:
    count = len(owner)
    description_tokens = sum(1 for box in owner if box >= 0)
    scene_start = composed.spans[-1][1]
    scene_tokens = sum(
        1
        for index, (start, end) in enumerate(offsets)
        if not special[index] and owner[index] < 0 and end > scene_start
    )
    if scene_tokens >= description_tokens:
        field = "scene_prompt"
    else:  # name the description that takes the most tokens: shortening it helps most
        per_box = [owner.count(box) for box in range(len(composed.descriptions))]
        field = f"descriptions[{per_box.index(max(per_box))}]"
    raise PromptTooLongError(
        field,
        f"the prompt is {count} T5 tokens but the model reads at most {limit}: the scene prompt takes "
        f"{scene_tokens} and the box descriptions {description_tokens}. Shorten the scene prompt or the "
        f"descriptions by at least {count - limit} tokens.",
        token_count=count,
        limit=limit,
    )


class PromptCache:
    """The last ``capacity`` encodings by prompt text and dtype, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, torch.dtype], PromptEncoding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[str, torch.dtype]) -> bool:
        return key in self._entries  # a look, not a use: neither counted nor refreshed

    def get(self, key: tuple[str, torch.dtype]) -> PromptEncoding | None:
        encoding = self._entries.get(key)
        if encoding is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return encoding

    def put(self, key: tuple[str, torch.dtype], encoding: PromptEncoding) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = encoding
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class PromptEncoder:
    """Runs CLIP (pooled embedding) and T5 (sequence embeddings) on a composed prompt; with
    ``cache_entries``, a repeated prompt reuses its encoding (the encoders are frozen: same result)."""

    def __init__(
        self,
        tokenizer,
        text_encoder: PreTrainedModel,
        tokenizer_2,
        text_encoder_2: PreTrainedModel,
        cache_entries: int = 0,
    ):
        if not getattr(tokenizer_2, "is_fast", False):
            raise SetupError(
                "the T5 tokenizer (tokenizer_2) must be a fast tokenizer: call_ids need character offsets"
            )
        self.clip_tokenizer = tokenizer
        self.clip_encoder = text_encoder
        self.t5_tokenizer = tokenizer_2
        self.t5_encoder = text_encoder_2
        self.cache = PromptCache(cache_entries)

    def tokenize(self, composed: ComposedPrompt) -> TokenizedPrompt:
        return tokenize_for_t5(self.t5_tokenizer, composed)

    def prompt_checker(self) -> Callable[[str, list[str]], None]:
        """check(scene_prompt, descriptions): raises RequestError for a prompt the model cannot read.

        It has its own copy of the T5 tokenizer, so another thread (the server's socket loop) can
        check requests while this encoder runs: a fast tokenizer must not be used by two threads.
        """
        tokenizer = copy.deepcopy(self.t5_tokenizer)

        def check(scene_prompt: str, descriptions: list[str]) -> None:
            try:
                composed = compose_prompt(scene_prompt, list(descriptions))
            except ValueError as exc:
                raise RequestError("descriptions", str(exc)) from None
            tokenize_for_t5(tokenizer, composed)

        return check

    def is_cached(self, composed: ComposedPrompt, dtype: torch.dtype) -> bool:
        return (composed.text, dtype) in self.cache

    def encode(self, composed: ComposedPrompt, dtype: torch.dtype) -> PromptEncoding:
        """The encoding of ``composed`` (from the cache when it was encoded lately; do not modify it)."""
        key = (composed.text, dtype)
        encoding = self.cache.get(key)
        if encoding is None:
            encoding = self._encode(composed, dtype)
            self.cache.put(key, encoding)
        return encoding

    @torch.inference_mode()
    def _encode(self, composed: ComposedPrompt, dtype: torch.dtype) -> PromptEncoding:
        tokens = self.tokenize(composed)
        t5_device = next(self.t5_encoder.parameters()).device
        t5_ids = torch.full((1, T5_MAX_TOKENS), self.t5_tokenizer.pad_token_id, dtype=torch.long)
        t5_ids[0, : len(tokens.input_ids)] = torch.tensor(tokens.input_ids, dtype=torch.long)
        # FLUX feeds T5 the padded sequence without an attention mask; the checkpoint was trained so.
        prompt_embeds = self.t5_encoder(t5_ids.to(t5_device), output_hidden_states=False)[0]

        clip_device = next(self.clip_encoder.parameters()).device
        clip_ids = self.clip_tokenizer(
            composed.text,
            padding="max_length",
            max_length=self.clip_tokenizer.model_max_length,
            truncation=True,  # CLIP only gives the pooled vector; FLUX truncates it to 77 tokens
            return_tensors="pt",
        ).input_ids
        pooled = self.clip_encoder(clip_ids.to(clip_device), output_hidden_states=False).pooler_output
        return PromptEncoding(
            prompt=composed.text,
            prompt_embeds=prompt_embeds.to(dtype),
            pooled_embeds=pooled.to(dtype),
            call_ids=tokens.call_ids,
            token_count=len(tokens.input_ids),
        )
