"""How long an SMS is, as carriers count it: encoding, characters and segments.

A text made only of GSM 03.38 characters is sent in GSM-7: 160 septets in a single message,
153 per part once it is split (each part carries a header); the extension table's characters
(``^{}\\[~]|€`` and form feed) take two septets. Anything else (Chinese, emoji, curly quotes)
switches the whole message to UCS-2: 70 UTF-16 code units single, 67 per part. A character is
never split across two parts. Providers bill per part, and refuse bodies over their limit:
Twilio takes at most 1,600 characters (``SMS_MAX_CHARS``; its channel declares it as
``max_body``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Twilio's Messages API takes a body "up to 1,600 characters in length".
SMS_MAX_CHARS = 1600

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7, UCS2 = "GSM-7", "UCS-2"
_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class SmsSize:
    """An SMS body as a carrier sees it."""

    encoding: str  # GSM-7 or UCS-2
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int  # parts it is sent (and billed) as; 0 for an empty body

    def __str__(self) -> str:
        unit = "septets" if self.encoding == GSM7 else "UTF-16 units"
        return f"{self.segments} segment(s), {self.units} {unit} in {self.encoding}"


def sms_size(text: str) -> SmsSize:
    """The encoding, length and number of segments of ``text`` sent as one SMS."""
    gsm = all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text)
    encoding = GSM7 if gsm else UCS2
    if gsm:
        costs = [2 if ch in _GSM_EXTENSION else 1 for ch in text]
    else:
        costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]  # a surrogate pair
    units = sum(costs)
    single, part = _LIMITS[encoding]
    if units == 0:
        return SmsSize(encoding, 0, 0)
    if units <= single:
        return SmsSize(encoding, units, 1)
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:  # a two-unit character moves whole to the next part
            segments += 1
            used = 0
        used += cost
    return SmsSize(encoding, units, segments)
