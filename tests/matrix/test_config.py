"""Unit tests of a cell's config (``bench.matrix.config``): what it accepts, and the rule that makes
its id a promise — first-release fields always hashed, later ones only away from their default."""
from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from bench.matrix.config import ID_FIELDS_V1, CellConfig, cell_id, id_payload, safe_name

BASE: dict[str, Any] = {"stage": "teacher", "method": "supervised", "arch": "menghani_mlp", "dataset": "digits"}
LATER = sorted(name for name in CellConfig.model_fields if name not in ID_FIELDS_V1)


def config(**fields: Any) -> CellConfig:
    return CellConfig.model_validate({**BASE, **fields})


def test_an_id_is_twelve_hex_digits_and_ignores_key_order() -> None:
    forward = CellConfig.model_validate(BASE)
    backward = CellConfig.model_validate(dict(reversed(list(BASE.items()))))
    assert re.fullmatch(r"[0-9a-f]{12}", cell_id(forward)) and cell_id(forward) == cell_id(backward)


def test_first_release_fields_are_always_hashed() -> None:
    payload = id_payload(config())
    assert ID_FIELDS_V1 <= set(payload)
    assert cell_id(config(seed=1)) != cell_id(config()) and cell_id(config(lr=0.05)) != cell_id(config())


@pytest.mark.parametrize("name", LATER)
def test_a_later_field_at_its_default_changes_no_id(name: str) -> None:
    """Adding a field whose default keeps today's behaviour keeps every id: spelled at its default it
    is not hashed, so a config written before the field existed is the same cell."""
    default = CellConfig.model_fields[name].get_default(call_default_factory=True)
    spelled = config(**{name: default})
    assert name not in id_payload(spelled) and cell_id(spelled) == cell_id(config())


def test_a_later_field_away_from_its_default_changes_the_id() -> None:
    assert cell_id(config(split_seed=3)) != cell_id(config())
    assert id_payload(config(split_seed=3))["split_seed"] == 3


def test_splits_follow_the_seed_unless_a_split_seed_is_given() -> None:
    assert config(seed=4).effective_split_seed == 4
    assert config(seed=4, split_seed=0).effective_split_seed == 0


@pytest.mark.parametrize("fields, names", [
    ({"no_such_field": 1}, "no_such_field"),
    ({"epochs": "many"}, "epochs"),
    ({"label_fraction": 1.5}, "label_fraction"),
    ({"arch": "../../etc"}, "arch"),
])
def test_a_bad_field_is_refused_by_name(fields: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError) as error:
        config(**fields)
    assert [".".join(map(str, e["loc"])) for e in error.value.errors()] == [names]


@pytest.mark.parametrize("name", ["resnet50", "vit_base_patch16_224.augreg_in21k", "a+b-c_d"])
def test_plain_names_pass(name: str) -> None:
    assert safe_name(name) == name


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", "a b", "a\nb", "$(x)", ""])
def test_names_that_could_reach_a_path_or_a_shell_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        safe_name(name)


def test_configs_are_frozen() -> None:
    with pytest.raises(ValidationError):
        config().seed = 2  # type: ignore[misc]
