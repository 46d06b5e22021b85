import pytest

from firstlight.domain import validation
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


# -- whole-string matching (issue 14, item 2): "^…$" with re.match accepts "evil\n" ---------------

# Endings and look-alikes that a pattern anchored with "$" (or a \w/\d class) lets through.
NOT_WHOLE = ["\n", "\r", "\r\n", "\x00", " ", "\t", "\u2028", "\x0b"]
LOOKALIKES = ["\u0435vil", "evi\u217c", "\uff45vil", "\u0661"]  # Cyrillic е, Roman numeral ⅼ, fullwidth ｅ, Arabic-Indic 1


@pytest.mark.parametrize("suffix", NOT_WHOLE)
def test_identifiers_match_the_whole_string(suffix: str) -> None:
    for check, good in (
        (validation.app_id, "evil"),
        (validation.input_id, "x"),
        (validation.embedding_model, "backbone"),
        (validation.embedding_model, "emb@1"),
    ):
        assert check(good) == good
        for bad in (good + suffix, suffix + good, good[:1] + suffix + good[1:]):
            with pytest.raises(InvalidArgument):
                check(bad)


@pytest.mark.parametrize("bad", LOOKALIKES)
def test_identifiers_are_ascii_only(bad: str) -> None:
    for check in (validation.app_id, validation.input_id, validation.embedding_model):
        with pytest.raises(InvalidArgument):
            check(bad)


def test_api_key_pattern_and_names_are_whole_string() -> None:
    from firstlight.hosting.keys import looks_like_app_key, new_key

    key = new_key()[1]
    assert looks_like_app_key(key)
    for suffix in NOT_WHOLE:
        assert not looks_like_app_key(key + suffix)
    assert validation.key_name("camera uploader") == "camera uploader"
    for bad in ("ci\n", "ci\r", "c\x00i", "zero\u200bwidth"):
        with pytest.raises(InvalidArgument):
            validation.key_name(bad)


def test_collection_names_are_whole_string() -> None:
    from firstlight.search.vector_store import check_collection_name

    assert check_collection_name("inputs") == "inputs"
    for bad in ("inputs\n", "inputs\r", "in\x00puts", "\u0456nputs"):
        with pytest.raises(ValueError):
            check_collection_name(bad)


def test_no_anchored_match_in_the_services() -> None:
    """Identifier checks use ``fullmatch``: no ``re.match`` and no pattern ending in ``$``."""
    import re
    from pathlib import Path

    root = Path(validation.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if "v1" in path.relative_to(root).parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "re.match(" in line or re.search(r"""re\.compile\(r?["'][^"']*\$["']""", line):
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_page_tokens_are_opaque_signed_and_scoped() -> None:
    """Issue 14, item 7: tokens were base64("s:<global row number>"), readable and editable."""
    import base64

    token = validation.encode_page_token("s", 1234, "app-a")
    assert validation.decode_page_token("s", token, "app-a") == 1234
    assert b"1234" not in base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))  # not readable
    assert token != validation.encode_page_token("s", 1234, "app-a")  # random nonce: unlinkable
    assert validation.decode_page_token("s", "", "app-a") == 0
    tampered = token[:12] + ("A" if token[12] != "A" else "B") + token[13:]
    old_style = base64.urlsafe_b64encode(b"s:1234").decode()
    for bad, kind, scope in ((token, "s", "app-b"), (token, "o", "app-a"), (tampered, "s", "app-a"), (old_style, "s", "app-a"), ("x\n", "s", "app-a")):
        with pytest.raises(InvalidArgument, match="page_token"):
            validation.decode_page_token(kind, bad, scope)


def test_whole_number_takes_ascii_digits_only() -> None:
    from firstlight.domain.validation import whole_number

    assert whole_number("42") == 42 and whole_number(" 7 ") == 7 and whole_number("0") == 0
    # str.isdigit() is True for these, and int() refuses or misreads them
    for bad in ("²", "٣", "", " ", "-1", "1.5", "1e3", "9" * 19):
        assert whole_number(bad) is None, bad


def test_the_quality_page_ignores_a_number_it_cannot_read() -> None:
    from firstlight.gateway.portal_quality import _query

    assert _query({"examples": "²", "min_size": "7"})["examples"] == 20
    assert _query({"examples": "35"})["examples"] == 35 and _query({"min_size": "7"})["min_size"] == 7
