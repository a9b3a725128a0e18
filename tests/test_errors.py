"""One-line error texts: the first non-empty line of a message, or the exception's type when it has none."""

from attncredit.errors import first_line


def test_first_line_skips_blank_lines_and_falls_back_to_the_type():
    assert first_line(ValueError("bad value 'x'; allowed: a, b\nTraceback (most recent call last):")) == (
        "bad value 'x'; allowed: a, b")
    assert first_line(RuntimeError("\n   \n  worker died  \n detail")) == "worker died"
    assert first_line(OSError()) == "OSError"
    assert first_line(TimeoutError("")) == "TimeoutError"
