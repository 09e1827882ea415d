"""The model card's schema (model_card.schema.json) and its check when a card is read: the shipped cards pass, a card
with a missing or mistyped field or from a newer engine is refused naming the file and the field, and the engine's
small schema reader agrees with the reference implementation (jsonschema)."""

import copy
import json

import jsonschema
import pytest
import torch

from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import WeightsError
from LDCTDenoiseLib.model_card import CARD_FORMAT, card_schema, check_card_layout
from LDCTDenoiseLib.model_registry import SHIPPED_MODELS_DIR, ModelRegistry, read_card, save_model

SHIPPED_CARDS = sorted(SHIPPED_MODELS_DIR.glob("*.json"))


def reference_errors(card) -> list:
    return list(jsonschema.Draft202012Validator(card_schema()).iter_errors(card))


def test_the_schema_is_valid_draft_2020_12_and_names_the_current_format():
    jsonschema.Draft202012Validator.check_schema(card_schema())
    assert card_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert card_schema()["properties"]["card_format"]["maximum"] == CARD_FORMAT


@pytest.mark.parametrize("card_path", SHIPPED_CARDS, ids=[path.stem for path in SHIPPED_CARDS])
def test_shipped_cards_follow_the_schema_as_format_0(card_path):
    card = json.loads(card_path.read_text(encoding="utf-8"))
    assert "card_format" not in card  # written before the field existed: version 0, loaded unchanged
    assert reference_errors(card) == []
    assert read_card(card_path) == card
    model, loaded = ModelRegistry([SHIPPED_MODELS_DIR]).load(card["name"])
    assert loaded == card and isinstance(model, CPCE2D)


BAD_CARDS = {  # what breaks the card -> the field the message must name
    "missing command": (lambda card: card.pop("command"), "'command'"),
    "missing normalization.hu_range": (lambda card: card["normalization"].pop("hu_range"), "'normalization.hu_range'"),
    "hu_min as text": (lambda card: card["normalization"].update(hu_min="-1024"), "'normalization.hu_min'"),
    "training as a list": (lambda card: card.update(training=[]), "'training'"),
    "a loss weight as a list": (lambda card: card["losses"].update(mse=[1.0]), "'losses.mse'"),
    "weights in another folder": (lambda card: card.update(file="../elsewhere.pt"), "'file'"),
    "sha256 not hex": (lambda card: card.update(sha256="x" * 64), "'sha256'"),
    "a domain as a number": (lambda card: card["training"].update(domains=["mayo", 3]), "'training.domains[1]'"),
    "card_format as text": (lambda card: card.update(card_format="1"), "'card_format'"),
}


@pytest.mark.parametrize("breakage", list(BAD_CARDS))
def test_a_bad_card_is_refused_naming_the_file_and_the_field(breakage, tmp_path):
    card = json.loads(SHIPPED_CARDS[0].read_text(encoding="utf-8"))
    change, field = BAD_CARDS[breakage]
    change(card)
    assert reference_errors(card), f"jsonschema accepts the card with {breakage}"
    card_path = tmp_path / SHIPPED_CARDS[0].name
    card_path.write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(WeightsError) as refused:
        read_card(card_path)
    assert str(card_path) in str(refused.value) and field in str(refused.value)


def test_a_card_from_a_newer_engine_is_refused_with_the_versions(tmp_path):
    card = json.loads(SHIPPED_CARDS[0].read_text(encoding="utf-8"))
    card["card_format"] = CARD_FORMAT + 1
    card_path = tmp_path / "future.json"
    card_path.write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(WeightsError, match=f"card_format {CARD_FORMAT + 1}, newer than .* reads \\({CARD_FORMAT}\\); "
                                           "update LDCTDenoise") as refused:
        read_card(card_path)
    assert str(card_path) in str(refused.value)
    assert ModelRegistry([tmp_path]).entries() == []  # listed nowhere, rather than failing later


def test_save_model_writes_the_current_format_and_refuses_a_card_that_would_not_load(tmp_path):
    torch.manual_seed(0)
    card = {"name": "tiny", "description": "test model", "training": {}, "losses": {"mse": 1.0, "gan_loss": "bce"},
            "validation": {}, "command": "pytest", "card_format": 0}
    card_path = save_model(CPCE2D(), card, tmp_path)
    written = json.loads(card_path.read_text(encoding="utf-8"))
    assert written["card_format"] == CARD_FORMAT and list(written)[0] == "card_format"
    assert reference_errors(written) == [] and ModelRegistry([tmp_path]).entry("tiny").card == written
    bad = copy.deepcopy(card)
    bad.update(name="broken", validation="none")
    with pytest.raises(WeightsError, match="'validation'"):
        save_model(CPCE2D(), bad, tmp_path / "other")
    assert not (tmp_path / "other").exists() or list((tmp_path / "other").iterdir()) == []


def test_the_reader_and_jsonschema_agree_on_random_damage():
    """Damage to every field of a shipped card: the engine's reader refuses exactly what jsonschema does."""
    base = json.loads(SHIPPED_CARDS[0].read_text(encoding="utf-8"))
    replacements = [None, True, 3, 2.5, "text", [], ["a"], {}, {"name": 1}]
    paths = [(key,) for key in base] + [(key, sub) for key, value in base.items() if isinstance(value, dict)
                                        for sub in value]
    for path in paths:
        for replacement in replacements:
            card = copy.deepcopy(base)
            target = card
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(replacement)
            try:
                check_card_layout(card, "card")
                refused = False
            except WeightsError:
                refused = True
            assert refused == bool(reference_errors(card)), (path, replacement)
