"""The text prompt the SeeThrough3D checkpoint was trained on.

Training captions follow one template: ``"a photo of " + " and ".join(descriptions) + " " + scene_prompt``.
The model links every box to the text tokens of its description, so besides the prompt we keep the
character span of each description; the server maps those spans to T5 token positions (``call_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT_PREFIX = "a photo of "
DESCRIPTION_JOINER = " and "


@dataclass(frozen=True)
class ComposedPrompt:
    """The full prompt and where each description sits in it.

    ``spans[k]`` is the half-open character range ``(start, end)`` of ``descriptions[k]`` in ``text``,
    so ``text[start:end] == descriptions[k]``.
    """

    text: str
    descriptions: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    scene_prompt: str


def compose_prompt(scene_prompt: str, descriptions: list[str]) -> ComposedPrompt:
    """Build the training-template prompt from a scene prompt and one description per box.

    Surrounding whitespace of every part is dropped (it would only shift token boundaries). An empty
    scene prompt gives no trailing space. Raises ``ValueError`` for no descriptions or an empty one.
    """
    if not descriptions:
        raise ValueError("at least one description is needed")
    cleaned = [description.strip() for description in descriptions]
    for index, description in enumerate(cleaned):
        if not description:
            raise ValueError(f"description {index} is empty")
    scene = scene_prompt.strip()

    text = PROMPT_PREFIX
    spans: list[tuple[int, int]] = []
    for index, description in enumerate(cleaned):
        if index > 0:
            text += DESCRIPTION_JOINER
        spans.append((len(text), len(text) + len(description)))
        text += description
    if scene:
        text += " " + scene
    return ComposedPrompt(text=text, descriptions=tuple(cleaned), spans=tuple(spans), scene_prompt=scene)
