"""The model card's layout (``model_card.schema.json``, JSON Schema draft 2020-12) and its check when a card is read.

The check is a small reader of the keywords the schema uses rather than the ``jsonschema`` package: the Slicer panel
lists the models as soon as PyTorch is there, which can be before the engine's other packages are installed, and a
card must be checked then too. ``Testing/Python/test_model_card.py`` holds this reader to ``jsonschema``'s verdicts.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Union

from .errors import WeightsError

SCHEMA_PATH = Path(__file__).resolve().with_name("model_card.schema.json")
CARD_FORMAT = 1  # what save_model writes; a card without ``card_format`` is version 0 (the same layout)

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


@functools.lru_cache(maxsize=1)
def card_schema() -> dict:
    """The schema, read once."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def check_card_layout(card: Any, source: Union[str, Path]) -> None:
    """Refuse a card that does not follow the schema, or that is newer than this engine reads; the error names the
    card (``source``) and the field."""
    version = card.get("card_format", 0) if isinstance(card, dict) else 0
    if isinstance(version, int) and not isinstance(version, bool) and version > CARD_FORMAT:
        raise WeightsError(f"Model card {source} has card_format {version}, newer than this version of LDCTDenoise "
                           f"reads ({CARD_FORMAT}); update LDCTDenoise to use this model.")
    problem = _first_problem(card, card_schema(), "")
    if problem:
        raise WeightsError(f"Model card {source}: {problem}.")


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _first_problem(value: Any, schema: dict, where: str) -> str:
    """The first way ``value`` breaks ``schema`` (the keywords model_card.schema.json uses), or ''."""
    field = f"field '{where}'" if where else "the card"
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is_type(value, name) for name in types):
            return f"{field} must be of type {' or '.join(types)}, not {type(value).__name__} {value!r:.60}"
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        return f"{field} is {value!r:.80}, which does not match {schema['pattern']}"
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        return f"{field} is {value}, below {schema['minimum']}"
    if "maximum" in schema and _is_type(value, "number") and value > schema["maximum"]:
        return f"{field} is {value}, above {schema['maximum']}"
    if isinstance(value, dict):
        missing = [key for key in schema.get("required", ()) if key not in value]
        if missing:
            names = ", ".join(f"'{where}.{key}'" if where else f"'{key}'" for key in missing)
            return f"lacks the field{'s' if len(missing) > 1 else ''} {names}"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if key in properties:
                problem = _first_problem(item, properties[key], path)
            elif extra is False:
                problem = f"field '{path}' is not allowed"
            elif isinstance(extra, dict):
                problem = _first_problem(item, extra, path)
            else:
                problem = ""
            if problem:
                return problem
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problem = _first_problem(item, schema["items"], f"{where}[{index}]")
            if problem:
                return problem
    return ""
