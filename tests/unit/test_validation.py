import pytest

from firstlight import validation
from firstlight.errors import InvalidArgument, ResourceExhausted


def test_app_ids() -> None:
    assert validation.app_id("my-app_1") == "my-app_1"
    for bad in ["", "Upper", "-lead", "a" * 64, "sp ace", "ünï"]:
        with pytest.raises(InvalidArgument):
            validation.app_id(bad)


def test_input_ids() -> None:
    assert validation.input_id("IMG_001.jpg") == "IMG_001.jpg"
    for bad in ["", ".hidden", "../etc/passwd", "a/b", "x" * 129]:
        with pytest.raises(InvalidArgument):
            validation.input_id(bad)


def test_concepts_unicode_trimmed_deduplicated() -> None:
    assert validation.concepts([" chat ", "猫", "chat", "Éléphant"]) == ["chat", "猫", "Éléphant"]


@pytest.mark.parametrize("bad", ["", "   ", "x" * 257, "tab\tname", "zero\u200bwidth"])
def test_bad_concepts(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validation.concept(bad)


def test_too_many_concepts() -> None:
    with pytest.raises(ResourceExhausted):
        validation.concepts([f"c{i}" for i in range(300)])


def test_page_size() -> None:
    assert validation.page_size(0, default=10, maximum=100) == 10
    with pytest.raises(InvalidArgument):
        validation.page_size(101, default=10, maximum=100)
    with pytest.raises(InvalidArgument):
        validation.page_size(-1, default=10, maximum=100)
