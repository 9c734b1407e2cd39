"""Demo data for the customer store: realistic customers, policies and events as CSV rows.

``make demo`` loads these through the ordinary CSV importer, so every row follows the import
conventions (SPEC section 4): dates ``YYYY-MM-DD``, empty string for null, ``true``/``false``,
premiums like ``1234.50``, ``occurred_at`` in ISO 8601 with the customer's UTC offset, payloads
as compact JSON objects. The only deliberately broken values are some phone numbers and email
addresses: the importer accepts them with a warning and the contact policy refuses to use them.

The data is a pure function of ``(today, customers, seed)``: one ``random.Random(seed)`` drives
every choice and the clock is never read. Besides a random population (about 60 % mainland
Chinese, 15 % Taiwanese, 25 % English-speaking customers) a fixed set of *guaranteed*
customers makes every shipped rule fire on ``today``:

* at least 8 Gregorian birthdays on today's month-day (two of them with names that look like
  markup, ``{{ 7*7 }}`` and ``<script>alert(1)</script>``), plus one birthday customer nobody
  can reach (``no_contact``) and one who is inactive;
* 2 lunar-calendar customers whose lunar birthday is today (when today is in a lunar leap month
  no lunar birthday is due anywhere, and they get ordinary lunar birth dates);
* 2 customers born on 29 February;
* 3 active term policies renewing on each of today + 30, + 7 and + 1;
* 3 long-term policies (no renewal date) whose anniversary is today, one started exactly a year
  ago (when today is 29 February: on 29 February of earlier leap years);
* 6 ``policy_purchased`` events on the customer's local yesterday, from 00:20 to 23:50 local
  time in several time zones;
* a customer with both a birthday and a renewal reminder today (the per-day cap decides), and
  a ``complaint_resolved`` event three local days ago.

The guaranteed customers are active and reachable (a valid address with consent on at least
one channel) unless stated otherwise, and sit at random places among the ids.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lunardate import LunarDate

from ..dates import LUNAR_MAX_YEAR, is_leap_year, lunar_anniversary_keys
from .models import CANONICAL_COLUMNS

# The CSV headers are exactly the store's canonical column names (SPEC section 4).
CUSTOMER_COLUMNS = CANONICAL_COLUMNS["customer"]
POLICY_COLUMNS = CANONICAL_COLUMNS["policy"]
EVENT_COLUMNS = CANONICAL_COLUMNS["event"]

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": CUSTOMER_COLUMNS,
    "policies": POLICY_COLUMNS,
    "events": EVENT_COLUMNS,
}

DEFAULT_TIMEZONE = "Asia/Shanghai"
"""The zone that applies to a customer with an empty ``timezone`` (``care_rules/policy.yaml``)."""

RENEWAL_OFFSETS = (30, 7, 1)

# Guaranteed customers, one role each (see the module docstring). The template-looking names
# belong to birthday customers so that a demo run renders them.
_ROLES: tuple[str, ...] = (
    *(["birthday"] * 8),
    "birthday-unreachable",
    "birthday-inactive",
    "lunar",
    "lunar",
    "feb29",
    "feb29",
    *(["renewal"] * (3 * len(RENEWAL_OFFSETS))),
    "birthday-and-renewal",
    "review",
    "review",
    "review",
    *(["purchase"] * 6),
    "complaint",
)
MIN_CUSTOMERS = len(_ROLES)
"""The smallest population that holds every guaranteed customer."""

_AWKWARD_NAMES = {  # role slot -> (name, romanised for the email, locale, timezone)
    ("birthday", 0): ("{{ 7*7 }}", "template.test", "en", "Europe/London"),
    ("birthday", 1): ("<script>alert(1)</script>", "script.test", "en", "America/New_York"),
    ("renewal", 2): ("Liam O'Brien", "liam.obrien", "en", "Europe/London"),
    ("purchase", 2): ("阿卜杜拉·艾买提", "abudula.aimaiti", "zh-CN", "Asia/Urumqi"),
}

# Local times and zones of the guaranteed purchases yesterday ("" = the default zone).
_PURCHASES = (
    ((0, 20), "Australia/Sydney", "en"),
    ((9, 15), "Asia/Shanghai", "zh-CN"),
    ((11, 40), "Asia/Urumqi", "zh-CN"),
    ((14, 5), "", "zh-CN"),
    ((19, 30), "Europe/London", "en"),
    ((23, 50), "America/Los_Angeles", "en"),
)

# --- names -----------------------------------------------------------------------------------
# (characters, romanisation for the email address)

_CN_SURNAMES = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"),
    ("杨", "yang"), ("赵", "zhao"), ("黄", "huang"), ("周", "zhou"), ("吴", "wu"),
    ("徐", "xu"), ("孙", "sun"), ("胡", "hu"), ("朱", "zhu"), ("高", "gao"),
    ("林", "lin"), ("何", "he"), ("郭", "guo"), ("马", "ma"), ("罗", "luo"),
    ("梁", "liang"), ("宋", "song"), ("郑", "zheng"), ("谢", "xie"), ("韩", "han"),
    ("唐", "tang"), ("冯", "feng"), ("于", "yu"), ("董", "dong"), ("萧", "xiao"),
    ("程", "cheng"), ("曹", "cao"), ("袁", "yuan"), ("邓", "deng"), ("许", "xu"),
    ("傅", "fu"), ("沈", "shen"), ("曾", "zeng"), ("彭", "peng"), ("吕", "lyu"),
)  # fmt: skip
_CN_COMPOUND_SURNAMES = (
    ("欧阳", "ouyang"),
    ("司马", "sima"),
    ("诸葛", "zhuge"),
    ("上官", "shangguan"),
)
_CN_GIVEN = (
    ("伟", "wei"), ("芳", "fang"), ("静", "jing"), ("敏", "min"), ("丽", "li"),
    ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"), ("勇", "yong"),
    ("艳", "yan"), ("杰", "jie"), ("娟", "juan"), ("涛", "tao"), ("明", "ming"),
    ("超", "chao"), ("秀英", "xiuying"), ("桂英", "guiying"), ("建华", "jianhua"),
    ("志强", "zhiqiang"), ("晓燕", "xiaoyan"), ("海燕", "haiyan"), ("子涵", "zihan"),
    ("雨桐", "yutong"), ("浩然", "haoran"), ("欣怡", "xinyi"), ("梓轩", "zixuan"),
    ("思远", "siyuan"), ("佳怡", "jiayi"), ("俊杰", "junjie"), ("婷婷", "tingting"),
    ("文博", "wenbo"), ("一鸣", "yiming"), ("宇航", "yuhang"), ("淑珍", "shuzhen"),
    ("国庆", "guoqing"), ("建国", "jianguo"), ("玉兰", "yulan"), ("丽娟", "lijuan"),
    ("红梅", "hongmei"), ("春生", "chunsheng"), ("秋菊", "qiuju"),
)  # fmt: skip
_TW_SURNAMES = (
    ("陳", "chen"), ("林", "lin"), ("黃", "huang"), ("張", "chang"), ("李", "lee"),
    ("王", "wang"), ("吳", "wu"), ("劉", "liu"), ("蔡", "tsai"), ("楊", "yang"),
    ("許", "hsu"), ("鄭", "cheng"), ("謝", "hsieh"), ("郭", "kuo"), ("洪", "hung"),
    ("曾", "tseng"), ("邱", "chiu"), ("廖", "liao"), ("賴", "lai"), ("周", "chou"),
)  # fmt: skip
_TW_GIVEN = (
    ("怡君", "yichun"), ("志明", "chihming"), ("雅婷", "yating"), ("家豪", "chiahao"),
    ("淑芬", "shufen"), ("俊宏", "chunhung"), ("美玲", "meiling"), ("建宏", "chienhung"),
    ("宗翰", "tsunghan"), ("佩珊", "peishan"), ("冠宇", "kuanyu"), ("詩涵", "shihhan"),
    ("承恩", "chengen"), ("惠雯", "huiwen"), ("柏翰", "pohan"), ("欣妤", "hsinyu"),
    ("育瑋", "yuwei"), ("怡萱", "yihsuan"), ("麗華", "lihua"), ("國榮", "kuojung"),
)  # fmt: skip
_EN_FIRST = (
    "Emily", "James", "Olivia", "Michael", "Sophie", "Daniel", "Charlotte", "William",
    "Hannah", "Thomas", "Grace", "Benjamin", "Amelia", "Jack", "Chloe", "Samuel",
    "Isabella", "Henry", "Lucy", "Oliver", "Ava", "Matthew", "Ella", "David", "Mia",
    "Ethan", "Zoe", "Noah", "Ruby", "Anne-Marie",
)  # fmt: skip
_EN_LAST = (
    "Carter", "Smith", "Johnson", "Williams", "Brown", "Jones", "Taylor", "Davies",
    "Wilson", "Evans", "Roberts", "Walker", "Wright", "Thompson", "White", "Hughes",
    "Edwards", "Green", "Hall", "Wood", "Harris", "Clarke", "Lewis", "Mitchell", "Baker",
    "Nguyen", "Patel", "Kowalski", "MacDonald", "Fitzgerald",
)  # fmt: skip

# --- places ----------------------------------------------------------------------------------

_LOCALE_WEIGHTS = (("zh-CN", 60), ("zh-TW", 15), ("en", 25))
_ZONE_WEIGHTS = {  # "" = no recorded zone (the default applies)
    "zh-CN": (
        ("Asia/Shanghai", 74),
        ("Asia/Urumqi", 4),
        ("Asia/Hong_Kong", 7),
        ("Asia/Singapore", 5),
        ("", 10),
    ),
    "zh-TW": (("Asia/Taipei", 80), ("Asia/Hong_Kong", 10), ("", 10)),
    "en": (
        ("Europe/London", 24),
        ("America/New_York", 20),
        ("America/Los_Angeles", 15),
        ("Australia/Sydney", 15),
        ("Asia/Singapore", 10),
        ("Asia/Hong_Kong", 6),
        ("", 10),
    ),
}
# Standard offsets, only used where the system has no time zone database.
_FALLBACK_OFFSET_HOURS = {
    "Asia/Shanghai": 8,
    "Asia/Urumqi": 6,
    "Asia/Hong_Kong": 8,
    "Asia/Taipei": 8,
    "Asia/Singapore": 8,
    "Europe/London": 0,
    "America/New_York": -5,
    "America/Los_Angeles": -8,
    "Australia/Sydney": 10,
}
_CURRENCY = {
    "Asia/Shanghai": "CNY",
    "Asia/Urumqi": "CNY",
    "Asia/Hong_Kong": "HKD",
    "Asia/Taipei": "TWD",
    "Asia/Singapore": "SGD",
    "Europe/London": "GBP",
    "America/New_York": "USD",
    "America/Los_Angeles": "USD",
    "Australia/Sydney": "AUD",
}

# Mobile prefixes (after the country code) that phonenumbers accepts as valid.
_CN_MOBILE = (
    *range(130, 140),
    *(150, 151, 152, 153, 155, 156, 157, 158, 159),
    *(176, 177, 178),
    *range(180, 190),
    *(198, 199),
)
_HK_MOBILE = ("61", "63", "64", "65", "69", "94", "96", "97")
_UK_MOBILE = ("74", "75", "78", "792", "793", "794", "795", "796", "797", "798")
_SG_MOBILE = ("81", "82", "83", "84", "85", "86", "87", "88", "90", "91", "92", "93", "94", "96")
_NY_AREAS = ("212", "646", "718", "917", "347", "332")
_LA_AREAS = ("415", "310", "213", "323", "650", "408", "626", "818")
_BAD_PHONES = (
    "12345",
    "+86 123",
    "138-0000-0000",
    "0912-345-678",
    "+1 555 0100",
    "+44 7700 900",
    "13800138000",
)
_BAD_EMAILS = (
    "wang@@example",
    "no-at-sign.example.com",
    "li.wei@example",
    "zhang wei@example.com",
    "chen.jing@example..com",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

# --- products --------------------------------------------------------------------------------
# (product, long_term, premium range); a long-term policy has no renewal date.

_PRODUCTS: dict[str, tuple[tuple[str, bool, tuple[int, int]], ...]] = {
    "zh-CN": (
        ("安心医疗险", False, (300, 3000)),
        ("驾乘意外险", False, (200, 800)),
        ("家财综合险", False, (200, 1500)),
        ("平安福终身寿险", True, (3000, 20000)),
        ("少儿教育金", True, (2000, 12000)),
        ("金瑞人生年金险", True, (5000, 20000)),
    ),
    "zh-TW": (
        ("安心住院醫療險", False, (300, 3000)),
        ("意外傷害險", False, (200, 900)),
        ("安心終身壽險", True, (3000, 20000)),
        ("子女教育年金", True, (2000, 12000)),
    ),
    "en": (
        ("Home Shield", False, (300, 2000)),
        ("Travel Plus", False, (200, 600)),
        ("Motor Comprehensive", False, (500, 2500)),
        ("Term Life 20", True, (400, 3000)),
        ("Whole Life Advantage", True, (2000, 15000)),
    ),
}
_PURCHASE_CHANNELS = ("agent", "online", "app", "branch", "bancassurance")
_COMPLAINT_TOPICS = ("claim_delay", "billing", "service_attitude", "policy_change", "refund")
_COMPLAINT_CHANNELS = ("hotline", "wechat", "branch", "email")


# --- records ---------------------------------------------------------------------------------


@dataclass
class _Customer:
    customer_id: str
    name: str
    romanised: str
    locale: str
    timezone: str
    birth_date: dt.date | None
    birthday_calendar: str
    phone: str
    email: str
    tier: str
    status: str
    consent_sms: bool
    consent_email: bool
    consent_marketing: bool

    def row(self) -> dict[str, str]:
        return {
            "customer_id": self.customer_id,
            "name": self.name,
            "birth_date": _date(self.birth_date),
            "birthday_calendar": self.birthday_calendar,
            "phone": self.phone,
            "email": self.email,
            "locale": self.locale,
            "timezone": self.timezone,
            "tier": self.tier,
            "status": self.status,
            "consent_sms": _bool(self.consent_sms),
            "consent_email": _bool(self.consent_email),
            "consent_marketing": _bool(self.consent_marketing),
        }


@dataclass
class _Policy:
    customer: _Customer
    product: str
    start_date: dt.date
    renewal_date: dt.date | None
    status: str
    premium: str
    policy_id: str = ""


@dataclass
class _Event:
    type: str
    customer: _Customer
    policy: _Policy | None
    occurred_at: dt.datetime
    payload: dict[str, Any] | None


def _date(value: dt.date | None) -> str:
    return value.isoformat() if value is not None else ""


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    values = [v for v, _ in weighted]
    weights = [w for _, w in weighted]
    return rng.choices(values, weights)[0]


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(count))


def _add_years(day: dt.date, years: int) -> dt.date:
    """The same month-day ``years`` later (or earlier); 29 February becomes 28 February."""
    year = day.year + years
    if (day.month, day.day) == (2, 29) and not is_leap_year(year):
        return dt.date(year, 2, 28)
    return day.replace(year=year)


def _zone(name: str) -> dt.tzinfo:
    name = name or DEFAULT_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.timezone(dt.timedelta(hours=_FALLBACK_OFFSET_HOURS.get(name, 8)))


def _local(day: dt.date, hour: int, minute: int, zone: str) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=_zone(zone))


class _Generator:
    def __init__(self, today: dt.date, customers: int, seed: int) -> None:
        self.today = today
        self.count = customers
        self.rng = random.Random(seed)
        self.emails: set[str] = set()
        self.customers: list[_Customer] = []
        self.policies: list[_Policy] = []
        self.events: list[_Event] = []

    # -- customers -----------------------------------------------------------------------

    def name(self, locale: str) -> tuple[str, str]:
        """A name in ``locale`` and its romanisation (for the email address)."""
        rng = self.rng
        if locale == "zh-CN":
            surnames = _CN_COMPOUND_SURNAMES if rng.random() < 0.03 else _CN_SURNAMES
            surname, sur_r = rng.choice(surnames)
            given, given_r = rng.choice(_CN_GIVEN)
            return surname + given, f"{sur_r}.{given_r}"
        if locale == "zh-TW":
            surname, sur_r = rng.choice(_TW_SURNAMES)
            given, given_r = rng.choice(_TW_GIVEN)
            return surname + given, f"{given_r}.{sur_r}"
        first, last = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
        romanised = f"{first}.{last}"
        if rng.random() < 0.06:
            first = f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}."
        return f"{first} {last}", romanised

    def phone(self, zone: str, locale: str) -> str:
        """A valid E.164 mobile number of the country of ``zone`` (or of ``locale``)."""
        rng = self.rng
        if not zone:
            zone = {"zh-TW": "Asia/Taipei", "en": "Europe/London"}.get(locale, DEFAULT_TIMEZONE)
        if zone in ("Asia/Shanghai", "Asia/Urumqi"):
            return f"+86{rng.choice(_CN_MOBILE)}{_digits(rng, 8)}"
        if zone == "Asia/Taipei":
            return f"+8869{rng.randint(1, 8)}{_digits(rng, 7)}"
        if zone == "Asia/Hong_Kong":
            return f"+852{rng.choice(_HK_MOBILE)}{_digits(rng, 6)}"
        if zone == "Asia/Singapore":
            return f"+65{rng.choice(_SG_MOBILE)}{_digits(rng, 6)}"
        if zone == "Europe/London":
            prefix = rng.choice(_UK_MOBILE)
            return f"+44{prefix}{_digits(rng, 10 - len(prefix))}"
        if zone == "Australia/Sydney":
            return f"+614{rng.randint(0, 3)}{_digits(rng, 7)}"
        areas = _NY_AREAS if zone == "America/New_York" else _LA_AREAS
        while True:
            exchange = f"{rng.randint(2, 9)}{_digits(rng, 2)}"
            if exchange[1:] != "11" and exchange != "555":
                break
        return f"+1{rng.choice(areas)}{exchange}{_digits(rng, 4)}"

    def email(self, romanised: str) -> str:
        """A valid, unused address at an example domain."""
        rng = self.rng
        kept = (ch for ch in romanised.lower() if ch.isascii() and (ch.isalnum() or ch == "."))
        local = "".join(kept).strip(".") or "customer"
        style = rng.random()
        if style < 0.3:
            local = local.replace(".", "")
        elif style < 0.5:
            local = f"{local}{rng.randint(1, 99)}"
        domain = rng.choice(_EMAIL_DOMAINS)
        address = f"{local}@{domain}"
        while address in self.emails:
            address = f"{local}{rng.randint(1, 9999)}@{domain}"
        self.emails.add(address)
        return address

    def birth_date(self) -> dt.date:
        first, last = dt.date(1950, 1, 1).toordinal(), dt.date(2005, 12, 31).toordinal()
        return dt.date.fromordinal(self.rng.randint(first, last))

    def customer(self, number: int) -> _Customer:
        rng = self.rng
        locale = _pick(rng, _LOCALE_WEIGHTS)
        name, romanised = self.name(locale)
        zone = _pick(rng, _ZONE_WEIGHTS[locale])
        lunar = locale != "en" and rng.random() < 0.10
        birth: dt.date | None = self.birth_date()
        if not lunar and rng.random() < 0.07:
            birth = None
        roll = rng.random()  # 5 % missing, 5 % malformed
        phone = "" if roll < 0.05 else rng.choice(_BAD_PHONES) if roll < 0.10 else None
        roll = rng.random()  # 8 % missing, 3 % malformed
        email = "" if roll < 0.08 else rng.choice(_BAD_EMAILS) if roll < 0.11 else None
        return _Customer(
            customer_id=f"C{number:06d}",
            name=name,
            romanised=romanised,
            locale=locale,
            timezone=zone,
            birth_date=birth,
            birthday_calendar="lunar" if lunar else "gregorian",
            phone=self.phone(zone, locale) if phone is None else phone,
            email=self.email(romanised) if email is None else email,
            tier=_pick(rng, (("A", 10), ("B", 20), ("C", 50), ("D", 20))),
            status="inactive" if rng.random() < 0.05 else "active",
            consent_sms=rng.random() >= 0.10,
            consent_email=rng.random() >= 0.10,
            consent_marketing=rng.random() < 0.40,
        )

    def relocate(
        self, c: _Customer, locale: str, zone: str, name: str = "", romanised: str = ""
    ) -> None:
        """Give ``c`` another identity, with addresses that match it."""
        if not name:
            name, romanised = self.name(locale)
        c.name, c.romanised, c.locale, c.timezone = name, romanised, locale, zone
        if locale == "en":
            c.birthday_calendar = "gregorian"
        c.phone = self.phone(zone, locale)
        self.emails.discard(c.email)
        c.email = self.email(romanised)

    def reachable(self, c: _Customer) -> None:
        """Make ``c`` an active customer with valid addresses and email consent."""
        c.status = "active"
        if not c.phone or c.phone in _BAD_PHONES:
            c.phone = self.phone(c.timezone, c.locale)
        if not c.email or c.email in _BAD_EMAILS:
            c.email = self.email(c.romanised)
        c.consent_email = True
        # A few guaranteed customers have opted out of SMS: their touch goes by email.
        c.consent_sms = self.rng.random() >= 0.15

    def birthday_today(self) -> dt.date:
        """A Gregorian birth date whose birthday is today (29 February only in leap years)."""
        years = range(1950, 2006)
        if (self.today.month, self.today.day) == (2, 29):
            years = range(1952, 2006, 4)
        return dt.date(self.rng.choice(years), self.today.month, self.today.day)

    def lunar_birth(self, key: int) -> dt.date:
        """A Gregorian birth date whose lunar month-day is ``key`` (in a regular month)."""
        month, day = divmod(key, 100)
        year = self.rng.randint(1955, 2000)
        for candidate in range(year, year + 30):
            lunar = LunarDate(candidate, month, day, False)
            # lunardate 0.3 renamed toSolarDate (kept, deprecated) to to_solar_date.
            to_solar = getattr(lunar, "to_solar_date", None) or lunar.toSolarDate
            try:
                solar: dt.date = to_solar()
            except ValueError:  # day 30 of a 29-day month in that year
                continue
            return solar
        raise AssertionError(f"no lunar year has month {month} day {day}")  # pragma: no cover

    # -- policies ------------------------------------------------------------------------

    def premium(self, bounds: tuple[int, int]) -> str:
        low, high = bounds
        units = self.rng.randint(low, high)
        cents = 0 if units >= high else self.rng.choice((0, 0, 0, 50, 80))
        return f"{units}.{cents:02d}"

    def policy(
        self,
        c: _Customer,
        start: dt.date,
        *,
        long_term: bool,
        renewal: dt.date | None = None,
    ) -> _Policy:
        """An active policy of a product of the customer's market."""
        products = [p for p in _PRODUCTS[c.locale] if p[1] is long_term]
        product, _, bounds = self.rng.choice(products)
        if not long_term and renewal is None:
            renewal = _add_years(start, 1)
        p = _Policy(c, product, start, renewal, "active", self.premium(bounds))
        self.policies.append(p)
        return p

    def random_policies(self, c: _Customer) -> None:
        rng = self.rng
        today = self.today
        earliest = today - dt.timedelta(days=20 * 365)
        if c.birth_date is not None:
            adult = _add_years(c.birth_date, 18)
            if adult < today - dt.timedelta(days=60):
                earliest = max(earliest, adult)
        for _ in range(rng.choices((0, 1, 2, 3), (17, 52, 25, 6))[0]):
            product, long_term, bounds = rng.choice(_PRODUCTS[c.locale])
            status = rng.choices(("active", "lapsed", "cancelled"), (85, 9, 6))[0]
            recent = status == "active" and rng.random() < 0.08
            if recent:
                start = today - dt.timedelta(days=rng.randint(2, 30))
            else:
                span = max((today - dt.timedelta(days=31) - earliest).days, 0)
                start = earliest + dt.timedelta(days=rng.randint(0, span))
            renewal: dt.date | None = None
            if not long_term:
                # A term policy renews every year: the store holds the next renewal date
                # (for a lapsed or cancelled one, the renewal it missed).
                years = 1
                renewal = _add_years(start, years)
                while status == "active" and renewal <= today:
                    years += 1
                    renewal = _add_years(start, years)
            premium = "" if rng.random() < 0.04 else self.premium(bounds)
            p = _Policy(c, product, start, renewal, status, premium)
            self.policies.append(p)
            if recent:
                self.purchase(p, start, (rng.randint(8, 20), rng.choice((0, 10, 25, 40, 55))))
            elif rng.random() < 0.04 and start < today - dt.timedelta(days=60):
                self.claim(p)

    # -- events --------------------------------------------------------------------------

    def purchase(self, p: _Policy, day: dt.date, at: tuple[int, int]) -> None:
        payload = {
            "channel": self.rng.choice(_PURCHASE_CHANNELS),
            "product": p.product,
            "premium": p.premium or None,
        }
        when = _local(day, *at, p.customer.timezone)
        self.events.append(_Event("policy_purchased", p.customer, p, when, payload))

    def claim(self, p: _Policy) -> None:
        rng = self.rng
        day = self.today - dt.timedelta(days=rng.randint(2, 30))
        when = _local(day, rng.randint(9, 17), rng.choice((0, 15, 30, 45)), p.customer.timezone)
        payload = {
            "claim_id": f"CL{day:%Y%m%d}{rng.randint(1, 999):03d}",
            "amount": f"{rng.randint(3, 400) * 100}.00",
            "currency": _CURRENCY.get(p.customer.timezone or DEFAULT_TIMEZONE, "CNY"),
        }
        self.events.append(_Event("claim_settled", p.customer, p, when, payload))

    def complaint(self, c: _Customer, day: dt.date, at: tuple[int, int]) -> None:
        rng = self.rng
        own = [p for p in self.policies if p.customer is c]
        policy = rng.choice(own) if own and rng.random() < 0.5 else None
        payload = {
            "case_id": f"CS{day:%Y%m%d}{rng.randint(1, 999):03d}",
            "channel": rng.choice(_COMPLAINT_CHANNELS),
            "topic": rng.choice(_COMPLAINT_TOPICS),
        }
        when = _local(day, *at, c.timezone)
        self.events.append(_Event("complaint_resolved", c, policy, when, payload))

    # -- guaranteed customers ------------------------------------------------------------

    def shape(self, c: _Customer, role: str, slot: int) -> None:
        """Make ``c`` fit its role: identity, contact details, birth date."""
        rng = self.rng
        awkward = _AWKWARD_NAMES.get((role, slot))
        if awkward:
            name, romanised, locale, zone = awkward
            self.relocate(c, locale, zone, name, romanised)
        elif role == "purchase":
            _, zone, locale = _PURCHASES[slot]
            self.relocate(c, locale, zone)
        elif role == "lunar" and c.locale == "en":
            self.relocate(c, "zh-CN", "Asia/Shanghai")
        self.reachable(c)
        if role.startswith("birthday"):
            c.birthday_calendar = "gregorian"
            c.birth_date = self.birthday_today()
        if role == "birthday-unreachable":
            c.phone = rng.choice(_BAD_PHONES)
            self.emails.discard(c.email)
            c.email = ""
        elif role == "birthday-inactive":
            c.status = "inactive"
        elif role == "lunar":
            c.birthday_calendar = "lunar"
            keys = lunar_anniversary_keys(self.today)
            # With two keys (day 29 of a short month), the second customer is born on day 30.
            key = keys[min(slot, len(keys) - 1)] if keys else None
            c.birth_date = self.lunar_birth(key) if key else self.birth_date()
        elif role == "feb29":
            c.birthday_calendar = "gregorian"
            c.birth_date = dt.date(rng.choice(range(1952, 2005, 4)), 2, 29)

    def attach(self, c: _Customer, role: str, slot: int) -> None:
        """Give ``c`` the policies and events of its role."""
        today = self.today
        yesterday = today - dt.timedelta(days=1)
        if role in ("renewal", "birthday-and-renewal"):
            offset = 7 if role == "birthday-and-renewal" else RENEWAL_OFFSETS[slot % 3]
            renewal = today + dt.timedelta(days=offset)
            self.policy(c, _add_years(renewal, -1), long_term=False, renewal=renewal)
        elif role == "review":
            self.policy(c, self.review_start(slot), long_term=True)
        elif role == "purchase":
            p = self.policy(c, yesterday, long_term=slot % 2 == 1)
            self.purchase(p, yesterday, _PURCHASES[slot][0])
        elif role == "complaint":
            self.complaint(c, today - dt.timedelta(days=3), (16, 20))

    def review_start(self, slot: int) -> dt.date:
        """A start date, a year or more ago, whose anniversary is today."""
        today = self.today
        if (today.month, today.day) == (2, 29):
            leap_years = [y for y in range(today.year - 1, today.year - 40, -1) if is_leap_year(y)]
            return dt.date(leap_years[slot], 2, 29)
        if slot == 2 and (today.month, today.day) == (2, 28) and not is_leap_year(today.year):
            # A policy started on 29 February is reviewed on 28 February in a common year.
            leap = next(y for y in range(today.year - 1, today.year - 9, -1) if is_leap_year(y))
            return dt.date(leap, 2, 29)
        return _add_years(today, -(1, 3, 7)[slot])

    # -- the whole store -----------------------------------------------------------------

    def build(self) -> None:
        rng = self.rng
        self.customers = [self.customer(n + 1) for n in range(self.count)]
        roles: list[tuple[_Customer, str, int]] = []
        seen: dict[str, int] = {}
        for index, role in zip(rng.sample(range(self.count), len(_ROLES)), _ROLES, strict=True):
            seen[role] = seen.get(role, -1) + 1
            roles.append((self.customers[index], role, seen[role]))
        for c, role, slot in roles:
            self.shape(c, role, slot)
        for c in self.customers:
            self.random_policies(c)
        for c, role, slot in roles:
            self.attach(c, role, slot)
        for c in self.customers:
            if rng.random() < 0.03:
                day = self.today - dt.timedelta(days=rng.randint(4, 30))
                self.complaint(c, day, (rng.randint(9, 18), rng.choice((0, 20, 40))))
        # Policy ids follow the customers, events are numbered in the order they happened.
        order = {c.customer_id: i for i, c in enumerate(self.customers)}
        self.policies.sort(key=lambda p: (order[p.customer.customer_id], p.start_date))
        for number, p in enumerate(self.policies, 1):
            p.policy_id = f"P{number:06d}"
        self.events.sort(key=lambda e: e.occurred_at.astimezone(dt.timezone.utc))

    def rows(self) -> dict[str, list[dict[str, str]]]:
        customers = [c.row() for c in self.customers]
        policies = [
            {
                "policy_id": p.policy_id,
                "customer_id": p.customer.customer_id,
                "product": p.product,
                "start_date": _date(p.start_date),
                "renewal_date": _date(p.renewal_date),
                "status": p.status,
                "premium": p.premium,
            }
            for p in self.policies
        ]
        events = []
        for number, e in enumerate(self.events, 1):
            payload = {k: v for k, v in (e.payload or {}).items() if v is not None}
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            events.append(
                {
                    "event_id": f"E{number:06d}",
                    "type": e.type,
                    "customer_id": e.customer.customer_id,
                    "policy_id": e.policy.policy_id if e.policy else "",
                    "occurred_at": e.occurred_at.isoformat(timespec="seconds"),
                    "payload": text if payload else "",
                }
            )
        return {"customers": customers, "policies": policies, "events": events}


def demo_rows(
    today: dt.date, customers: int = 240, seed: int = 7
) -> dict[str, list[dict[str, str]]]:
    """Rows for "customers", "policies", "events": each row maps exactly the column names above
    to CSV strings.

    The same ``(today, customers, seed)`` always gives the same rows. ``customers`` must be at
    least :data:`MIN_CUSTOMERS` (the guaranteed customers are part of the population).
    """
    if isinstance(today, dt.datetime):
        today = today.date()
    if customers < MIN_CUSTOMERS:
        raise ValueError(f"customers must be at least {MIN_CUSTOMERS}, got {customers}")
    if not 2006 <= today.year <= LUNAR_MAX_YEAR:
        # Birth dates run from 1950 to 2005; lunar birthdays end with the lunar tables.
        raise ValueError(f"today must be in the years 2006-{LUNAR_MAX_YEAR}, got {today}")
    generator = _Generator(today, customers, seed)
    generator.build()
    return generator.rows()


def write_demo_csvs(
    directory: Path, today: dt.date, customers: int = 240, seed: int = 7
) -> dict[str, Path]:
    """Write customers.csv, policies.csv, events.csv (UTF-8, header row = column names, csv
    module) and return their paths keyed by table name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for table, rows in demo_rows(today, customers, seed).items():
        path = directory / f"{table}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS[table], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        paths[table] = path
    return paths
