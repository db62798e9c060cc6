"""How many SMS segments a text costs, and in which encoding (3GPP TS 23.038 and 23.040).

No maintained library counts segments, so this is the standard's tables and numbers.
"""

from __future__ import annotations

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"

# The GSM 03.38 default alphabet (one septet each; ESC itself is not text) and its extension
# table, whose characters cost an escape septet too.
_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = frozenset("\f^{}\\[~]|€")

# Units in one segment alone, and per segment once the user-data header of a concatenated
# message takes its 6 bytes.
_LIMITS = {GSM_7: (160, 153), UCS_2: (70, 67)}


def segments(text: str) -> tuple[str, int]:
    """(encoding, segment count) of `text`: GSM-7 when every character is in the GSM
    alphabet, else UCS-2 (UTF-16 code units). An empty text costs no segment."""
    if all(char in _BASIC or char in _EXTENSION for char in text):
        encoding, costs = GSM_7, [2 if char in _EXTENSION else 1 for char in text]
    else:
        encoding, costs = UCS_2, [2 if ord(char) > 0xFFFF else 1 for char in text]
    single, per_part = _LIMITS[encoding]
    if sum(costs) <= single:
        return encoding, 1 if costs else 0
    # Phones never split an escape pair or a surrogate pair between segments.
    count, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            count, used = count + 1, 0
        used += cost
    return encoding, count
