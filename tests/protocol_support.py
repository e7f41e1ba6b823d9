"""Requests built from their wire fields, as a header lists them (the settings' own among them)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.protocol import GenerateRequest

SETTINGS_FIELDS = frozenset(f.name for f in fields(GenerationSettings))


def request_of(**wire_fields: Any) -> GenerateRequest:
    """A GenerateRequest from flat fields: the settings' go into its GenerationSettings."""
    settings = GenerationSettings(**{k: v for k, v in wire_fields.items() if k in SETTINGS_FIELDS})
    return GenerateRequest(settings, **{k: v for k, v in wire_fields.items() if k not in SETTINGS_FIELDS})


def wire_field(request: GenerateRequest, name: str) -> Any:
    """A request's value of one header key."""
    return getattr(request.settings if name in SETTINGS_FIELDS else request, name)
