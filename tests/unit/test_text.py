import pytest

from ledger.domain.errors import InvalidText
from ledger.domain.vocab import check_text


@pytest.mark.parametrize("text", ["O'Brien", "Robert'); DROP TABLE students;--", "a < b",
                                  "line one\nline two", "Zoë Ñúñez", "5 > 3", "x<3"])
def test_ordinary_text_including_sql_looking_text_is_kept_as_written(text):
    assert check_text("note", text, max_length=100) == text.strip()


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", "hi <b>there</b>", "<img src=x>",
                                  "bell\x07", "nul\x00", "</p>", "<!-- c -->"])
def test_markup_and_control_characters_are_refused_naming_the_field(text):
    with pytest.raises(InvalidText) as e:
        check_text("note", text, max_length=100)

    assert e.value.field == "note" and text not in str(e.value)
