"""How long an SMS is, as carriers count it: encoding, characters and segments.

A text made only of GSM 03.38 characters is sent in GSM-7: 160 septets in a single message,
153 per part once it is split (each part carries a header); the extension table's characters
(``^{}\\[~]|€`` and form feed) take two septets. Anything else (Chinese, emoji, curly quotes)
switches the whole message to UCS-2: 70 UTF-16 code units single, 67 per part. A character is
never split across two parts. Providers bill per part, and refuse bodies over their limit:
Twilio takes at most 1,600 characters (``SMS_MAX_CHARS``; its channel declares it as
``max_body``).

What a message costs (``sms_cost``) is the contact policy's ``sms.cost_per_segment`` times its
segments, in ``sms.currency`` (``SmsPricing``); without the key there is no estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

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


@dataclass(frozen=True)
class SmsPricing:
    """What the provider bills per segment (the contact policy's ``sms.cost_per_segment``)
    and in which currency (``sms.currency``)."""

    cost_per_segment: Decimal
    currency: str

    def format(self, cost: Decimal) -> str:
        """``0.0158 USD``: the cost as the policy gives prices (no float rounding)."""
        return f"{cost.normalize():f} {self.currency}"


def sms_cost(size: SmsSize, policy_sms: SmsPricing | None) -> Decimal | None:
    """The estimated cost of sending ``size``: its segments times the price per segment;
    None when the contact policy gives no price (``sms.cost_per_segment``)."""
    if policy_sms is None:
        return None
    return policy_sms.cost_per_segment * size.segments


def describe(size: SmsSize, policy_sms: SmsPricing | None) -> str:
    """``2 segment(s), 140 UTF-16 units in UCS-2, est. cost 0.0158 USD`` (the cost only
    when the contact policy prices a segment): what ``care preview`` prints."""
    cost = sms_cost(size, policy_sms)
    if cost is None or policy_sms is None:
        return str(size)
    return f"{size}, est. cost {policy_sms.format(cost)}"
