"""Why a scan is given no answer (no class, probabilities or lesion), in a few words.

The screening checks refuse a scan for different reasons: colour, a field too small, a blank image,
inverted grey levels, or features unlike any breast ultrasound scan's. Every refusal was shown as
"not recognised as a breast ultrasound scan", which is wrong for a Doppler image or a thumbnail of a
breast ultrasound scan (tester): the user was told the scan is not one and looked for the fault in
the wrong place. The long message, which says what to do, is the refusal's warning; these are the
words shown where the class would be (the Scan tab's label, the Batch tab's class cell, the CSV's
`no_answer` column, the JSON report, the PDF's result).
"""

from __future__ import annotations

from enum import StrEnum


class NoAnswer(StrEnum):
    """The reason, as the CSV and JSON give it (short enough for a phone's class column)."""

    IN_COLOUR = "in colour"
    TOO_SMALL = "too small"
    BLANK = "blank"
    INVERTED = "inverted"
    NOT_RECOGNISED = "not recognised"

    @property
    def phrase(self) -> str:
        """The reason as a phrase that follows "this image is"."""
        return _PHRASES[self]

    @property
    def headline(self) -> str:
        """The reason where the class would be shown (the Scan tab's label, the API's, the PDF's result)."""
        return f"No answer: this image is {self.phrase}"


_PHRASES = {NoAnswer.IN_COLOUR: "in colour, not a greyscale B-mode scan",
            NoAnswer.TOO_SMALL: "too small to analyse",
            NoAnswer.BLANK: "blank",
            NoAnswer.INVERTED: "shown with inverted grey levels",
            NoAnswer.NOT_RECOGNISED: "not recognised as a breast ultrasound scan"}
