import pytest
import torch

from model.errors import InvalidStyleWeightsError, UnknownStyleError
from model.style_spec import parse_style_spec

NAMES = ["starry_night", "great_wave", "scream"]


def test_single_name_is_weight_one():
    mix = parse_style_spec("great_wave", NAMES)
    assert mix.weights == (("great_wave", 1.0),)
    assert torch.equal(mix.vector(NAMES), torch.tensor([[0.0, 1.0, 0.0]]))


def test_blend_is_normalised_and_keeps_order():
    mix = parse_style_spec("scream:3, starry_night:1", NAMES)
    assert mix.weights == (("scream", 0.75), ("starry_night", 0.25))
    assert mix.header() == "scream:0.75,starry_night:0.25"
    assert torch.allclose(mix.vector(NAMES), torch.tensor([[0.25, 0.0, 0.75]]))


def test_zero_weight_entries_are_allowed_if_one_is_positive():
    assert parse_style_spec("scream:0,great_wave:2", NAMES).weights == (("scream", 0.0), ("great_wave", 1.0))


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("", InvalidStyleWeightsError, "empty"),
        ("unknown", UnknownStyleError, "unknown style 'unknown'"),
        ("scream:-1", InvalidStyleWeightsError, ">= 0"),
        ("scream:nan", InvalidStyleWeightsError, "finite"),
        ("scream:inf", InvalidStyleWeightsError, "finite"),
        ("scream:abc", InvalidStyleWeightsError, "not a number"),
        ("scream:0,great_wave:0", InvalidStyleWeightsError, "all zero"),
        ("scream:1,scream:2", InvalidStyleWeightsError, "more than once"),
        ("scream:1,,great_wave:1", InvalidStyleWeightsError, "empty entry"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, error, message):
    with pytest.raises(error, match=message):
        parse_style_spec(spec, NAMES)


def test_unknown_style_message_lists_the_available_ones():
    with pytest.raises(UnknownStyleError, match="available styles: starry_night, great_wave, scream"):
        parse_style_spec("mona_lisa", NAMES)
