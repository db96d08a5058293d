import pytest

from ledger.domain.errors import InvalidText
from ledger.domain.vocab import check_text


@pytest.mark.parametrize("text", ["O'Brien", "Robert'); DROP TABLE students;--", "a < b",
                                  "line one\nline two", "Zoë Ñúñez", "5 > 3", "x<3"])
def test_ordinary_text_including_sql_looking_text_is_kept_as_written(text):
    assert check_text("note", text, max_length=100) == text.strip()


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", "hi <b>there</b>", "<img src=x>",
                                  "bell\x07", "nul\x00", "</p>", "<!-- c -->",
                                  "lone \ud800 surrogate", "c1 \x85 control",
                                  "bidi \u202e override"])
def test_markup_and_control_characters_are_refused_naming_the_field(text):
    with pytest.raises(InvalidText) as e:
        check_text("note", text, max_length=100)

    assert e.value.field == "note" and text not in str(e.value)


@pytest.mark.parametrize("text", ["\ufeff", " \u200b ", "\u00a0"])
def test_invisible_only_text_counts_as_empty(text):
    with pytest.raises(InvalidText) as e:
        check_text("name", text, max_length=100)

    assert "required" in str(e.value)


def test_joiners_used_in_many_scripts_are_kept():
    name = "\u0645\u0647\u200c\u0633\u0627"  # a Persian name with a zero-width non-joiner

    assert check_text("name", name, max_length=100) == name
