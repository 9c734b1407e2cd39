"""Synthetic customers, policies and events, and agents and families: the one population
generator.

Used by the demo store (``store/demo.py``, ``care demo``) and by the benchmarks
(``bench/plan_scale.py``, ``bench/audit_scale.py``). A :class:`Population` is a pure function of
its ``today`` and ``seed``: one ``random.Random(seed)`` drives every choice of customers,
policies and events (agents and families: below) and the clock is never read. Its shares (locales, missing or malformed addresses, policies per customer, ...)
come from a :class:`Mix`; the default mix is the demo's: about 60 % mainland Chinese, 15 %
Taiwanese and 25 % English-speaking customers, names, phone numbers (valid E.164 mobiles of
the customer's country), email addresses at example domains and products of each market.
Some phone numbers and email addresses are deliberately malformed: the importer accepts
them with a warning and the contact policy refuses to use them.

Agents, customers' agents and segments, and family members (:class:`Agent`,
:class:`Relative`) are made on request (``Population.agents_and_relations``), drawn from a
second generator of their own (``random.Random`` of a text made from the seed): a seed's
customers, policies and events are the same with them or without them.

The generator makes records (:class:`Person`, :class:`Holding`, :class:`Happening`); the caller
decides which and when (the demo adds customers that make every shipped rule fire, a
benchmark keeps its bulk population away from the planning day). Records become rows in two
forms: CSV strings that follow the import conventions (SPEC section 4: dates ``YYYY-MM-DD``,
empty string for null, ``true``/``false``, premiums like ``1234.50``, ``occurred_at`` in
ISO 8601 with the customer's UTC offset, payloads as compact JSON), or typed values ready for
a bulk insert into the store's tables (derived month-day keys included).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from bisect import bisect
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lunardate import LunarDate

from ..dates import in_lunar_range, is_leap_year
from ..premiums import add_months, next_due_date
from ..vocab import PaymentFrequency
from .importer import with_derived_birthday, with_derived_customer, with_derived_policy

DEFAULT_TIMEZONE = "Asia/Shanghai"
"""The zone that applies to a customer with an empty ``timezone`` (``care_rules/policy.yaml``)."""

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
_LONG_TERM = frozenset(name for ps in _PRODUCTS.values() for name, long, _ in ps if long)
# The payment frequencies of long-term policies' premiums (besides an annuity's single one).
_FREQ_WEIGHTS = (("annual", 70), ("semi-annual", 10), ("quarterly", 8), ("monthly", 12))
GRACE_DAYS = 60
"""The grace period the demo's premiums are drawn against (care_rules/policy.yaml's)."""
_PURCHASE_CHANNELS = ("agent", "online", "app", "branch", "bancassurance")
_COMPLAINT_TOPICS = ("claim_delay", "billing", "service_attitude", "policy_change", "refund")
_COMPLAINT_CHANNELS = ("hotline", "wechat", "branch", "email")


PRODUCTS = _PRODUCTS
"""Products per locale: (name, long_term, (lowest, highest) premium)."""

BAD_PHONES = _BAD_PHONES
BAD_EMAILS = _BAD_EMAILS


@dataclass(frozen=True)
class Mix:
    """The shares a population is drawn with (the defaults are the demo's)."""

    locales: tuple[tuple[str, int], ...] = _LOCALE_WEIGHTS
    lunar: float = 0.10  # non-English customers on the lunar calendar
    no_birth_date: float = 0.07  # of the Gregorian-calendar customers
    missing_phone: float = 0.05
    bad_phone: float = 0.05
    missing_email: float = 0.08
    bad_email: float = 0.03
    inactive: float = 0.05
    policies_per_customer: tuple[int, int, int, int] = (17, 52, 25, 6)  # weights of 0..3
    recent_purchase: float = 0.08  # active policies bought in the last month (with an event)
    claim: float = 0.04  # older policies with a settled claim last month
    # Agents and families (``Population.agents_and_relations``).
    customers_per_agent: int = 200
    min_agents: int = 3
    group: float = 0.10  # customers in the segment "group" (group clients)
    with_relations: float = 0.35  # customers with family members on record
    lunar_relation: float = 0.25  # their non-English relations on the lunar calendar


# --- records ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Person:
    """One customer; ``policies`` are the ones made for them so far, in order."""

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
    agent_id: str = ""
    segment: str = ""
    policies: list[Holding] = field(default_factory=list, repr=False)

    def csv_row(self) -> dict[str, str]:
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
            "agent_id": self.agent_id,
            "segment": self.segment,
        }

    def values(self) -> dict[str, Any]:
        """The ``customers`` row as the importer would store it (derived keys included)."""
        return with_derived_customer(
            {
                "customer_id": self.customer_id,
                "name": self.name,
                "birth_date": self.birth_date,
                "birthday_calendar": self.birthday_calendar,
                "phone": self.phone or None,
                "email": self.email or None,
                "locale": self.locale,
                "timezone": self.timezone or None,
                "tier": self.tier,
                "status": self.status,
                "consent_sms": self.consent_sms,
                "consent_email": self.consent_email,
                "consent_marketing": self.consent_marketing,
                "agent_id": self.agent_id or None,
                "segment": self.segment or None,
            }
        )


@dataclass(eq=False)
class Agent:
    """One agent of the agency (``agents``); ``manager_id`` is another agent's id or ""."""

    agent_id: str
    name: str
    locale: str
    timezone: str
    phone: str
    email: str
    manager_id: str = ""

    def csv_row(self) -> dict[str, str]:
        return {
            "agent_id": self.agent_id,
            "name": self.name,
            "phone": self.phone,
            "email": self.email,
            "timezone": self.timezone,
            "manager_id": self.manager_id,
        }

    def values(self) -> dict[str, Any]:
        """The ``agents`` row as the importer would store it."""
        return {k: v or None for k, v in self.csv_row().items()}


@dataclass(eq=False)
class Relative:
    """A member of a customer's family (``relations``)."""

    relation_id: str
    customer: Person
    kind: str  # vocab.RelationKind
    name: str
    birth_date: dt.date | None
    birthday_calendar: str

    def csv_row(self) -> dict[str, str]:
        return {
            "relation_id": self.relation_id,
            "customer_id": self.customer.customer_id,
            "kind": self.kind,
            "name": self.name,
            "birth_date": _date(self.birth_date),
            "birthday_calendar": self.birthday_calendar,
        }

    def values(self) -> dict[str, Any]:
        """The ``relations`` row as the importer would store it (derived keys included)."""
        return with_derived_birthday(
            {
                "relation_id": self.relation_id,
                "customer_id": self.customer.customer_id,
                "kind": self.kind,
                "name": self.name,
                "birth_date": self.birth_date,
                "birthday_calendar": self.birthday_calendar,
            }
        )


@dataclass(eq=False)
class Holding:
    """One insurance policy of a customer (``policy_id`` is given when the ids are known)."""

    customer: Person
    product: str
    start_date: dt.date
    renewal_date: dt.date | None
    status: str
    premium: str
    policy_id: str = ""
    # A long-term policy's premium schedule (``Population.premium_schedule``); none for a term
    # policy, which renews instead.
    premium_due_date: dt.date | None = None
    payment_frequency: str = ""
    paid_through: dt.date | None = None

    def csv_row(self) -> dict[str, str]:
        return {
            "policy_id": self.policy_id,
            "customer_id": self.customer.customer_id,
            "product": self.product,
            "start_date": _date(self.start_date),
            "renewal_date": _date(self.renewal_date),
            "status": self.status,
            "premium": self.premium,
            "premium_due_date": _date(self.premium_due_date),
            "payment_frequency": self.payment_frequency,
            "paid_through": _date(self.paid_through),
        }

    def values(self) -> dict[str, Any]:
        """The ``policies`` row as the importer would store it (derived key included)."""
        return with_derived_policy(
            {
                "policy_id": self.policy_id,
                "customer_id": self.customer.customer_id,
                "product": self.product,
                "start_date": self.start_date,
                "renewal_date": self.renewal_date,
                "status": self.status,
                "premium": Decimal(self.premium) if self.premium else None,
                "premium_due_date": self.premium_due_date,
                "payment_frequency": self.payment_frequency or None,
                "paid_through": self.paid_through,
            }
        )


@dataclass(eq=False)
class Happening:
    """One business event about a customer (and maybe one of their policies)."""

    type: str
    customer: Person
    policy: Holding | None
    occurred_at: dt.datetime  # in the customer's zone
    payload: dict[str, Any] | None

    def _payload(self) -> dict[str, Any]:
        return {k: v for k, v in (self.payload or {}).items() if v is not None}

    def csv_row(self, event_id: str) -> dict[str, str]:
        payload = self._payload()
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return {
            "event_id": event_id,
            "type": self.type,
            "customer_id": self.customer.customer_id,
            "policy_id": self.policy.policy_id if self.policy else "",
            "occurred_at": self.occurred_at.isoformat(timespec="seconds"),
            "payload": text if payload else "",
        }

    def values(self, event_id: str) -> dict[str, Any]:
        """The ``events`` row as the importer would store it (``occurred_at`` in UTC)."""
        return {
            "event_id": event_id,
            "type": self.type,
            "customer_id": self.customer.customer_id,
            "policy_id": self.policy.policy_id if self.policy else None,
            "occurred_at": self.occurred_at.astimezone(dt.timezone.utc),
            "payload": self._payload() or None,
        }


def _date(value: dt.date | None) -> str:
    return value.isoformat() if value is not None else ""


def _bool(value: bool) -> str:
    return "true" if value else "false"


class _Weighted:
    """Weighted choices with the cumulative weights computed once: the same draw as
    ``rng.choices(values, weights)[0]`` (one ``rng.random()``), without its set-up per call."""

    def __init__(self, weighted: tuple[tuple[Any, int], ...]) -> None:
        self.values = [v for v, _ in weighted]
        self.cumulative = list(accumulate(w for _, w in weighted))
        self.total = self.cumulative[-1] + 0.0
        self.hi = len(self.values) - 1

    def pick(self, rng: random.Random) -> Any:
        return self.values[bisect(self.cumulative, rng.random() * self.total, 0, self.hi)]


_TIERS = _Weighted((("A", 10), ("B", 20), ("C", 50), ("D", 20)))
_POLICY_STATUS = _Weighted((("active", 85), ("lapsed", 9), ("cancelled", 6)))
_FREQUENCIES = _Weighted(_FREQ_WEIGHTS)


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(count))


def add_years(day: dt.date, years: int) -> dt.date:
    """The same month-day ``years`` later (or earlier); 29 February becomes 28 February."""
    year = day.year + years
    if (day.month, day.day) == (2, 29) and not is_leap_year(year):
        return dt.date(year, 2, 28)
    return day.replace(year=year)


def zone_info(name: str) -> dt.tzinfo:
    """The zone ``name`` ("" = the default zone), or its standard offset without a zone database."""
    name = name or DEFAULT_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.timezone(dt.timedelta(hours=_FALLBACK_OFFSET_HOURS.get(name, 8)))


def local_time(day: dt.date, hour: int, minute: int, zone: str) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone_info(zone))


# --- the generator ---------------------------------------------------------------------------


def _on_or_before(start: dt.date, months: int, day: dt.date) -> dt.date:
    """The last due date of the schedule from ``start`` (every ``months``) on or before
    ``day`` (``start`` itself when ``day`` is before the first after it)."""
    periods = ((day.year - start.year) * 12 + day.month - start.month) // months * months
    while periods > 0 and add_months(start, periods) > day:
        periods -= months
    return add_months(start, max(periods, 0))


class Population:
    """Makes customers, policies and events; keeps what it made in ``customers``,
    ``policies`` and ``events`` (a caller streaming a large population may clear them)."""

    def __init__(self, today: dt.date, seed: int, mix: Mix | None = None) -> None:
        self.today = today
        self.mix = mix or Mix()
        self.rng = random.Random(seed)
        # Agents, segments and families are drawn from a generator of their own, so that
        # adding them left every customer, policy and event of a seed as it was.
        self.family = random.Random(f"agents-and-relations:{seed}")
        # Premium schedules too: they came after the rest, and leave it as it was.
        self.schedules = random.Random(f"premiums:{seed}")
        # And the demo's complaint cases (``store.demo``).
        self.cases = random.Random(f"complaints:{seed}")
        self.emails: set[str] = set()
        self.customers: list[Person] = []
        self.policies: list[Holding] = []
        self.events: list[Happening] = []
        self.agents: list[Agent] = []
        self.relatives: list[Relative] = []
        self._locales = _Weighted(self.mix.locales)
        self._zones = {locale: _Weighted(w) for locale, w in _ZONE_WEIGHTS.items()}
        self._policy_counts = _Weighted(
            tuple(zip((0, 1, 2, 3), self.mix.policies_per_customer, strict=True))
        )

    # -- customers -----------------------------------------------------------------------

    def name(self, locale: str, rng: random.Random | None = None) -> tuple[str, str]:
        """A name in ``locale`` and its romanisation (for the email address), drawn with
        ``rng`` (default: the population's)."""
        rng = rng or self.rng
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

    def phone(self, zone: str, locale: str, rng: random.Random | None = None) -> str:
        """A valid E.164 mobile number of the country of ``zone`` (or of ``locale``), drawn
        with ``rng`` (default: the population's)."""
        rng = rng or self.rng
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

    def customer(self, number: int, customer_id: str = "") -> Person:
        """A new customer (``C`` and ``number`` in six digits unless ``customer_id`` is given),
        kept in ``customers``."""
        rng = self.rng
        mix = self.mix
        locale = self._locales.pick(rng)
        name, romanised = self.name(locale)
        zone = self._zones[locale].pick(rng)
        lunar = locale != "en" and rng.random() < mix.lunar
        birth: dt.date | None = self.birth_date()
        if not lunar and rng.random() < mix.no_birth_date:
            birth = None
        roll = rng.random()
        phone = (
            ""
            if roll < mix.missing_phone
            else rng.choice(_BAD_PHONES)
            if roll < mix.missing_phone + mix.bad_phone
            else None
        )
        roll = rng.random()
        email = (
            ""
            if roll < mix.missing_email
            else rng.choice(_BAD_EMAILS)
            if roll < mix.missing_email + mix.bad_email
            else None
        )
        c = Person(
            customer_id=customer_id or f"C{number:06d}",
            name=name,
            romanised=romanised,
            locale=locale,
            timezone=zone,
            birth_date=birth,
            birthday_calendar="lunar" if lunar else "gregorian",
            phone=self.phone(zone, locale) if phone is None else phone,
            email=self.email(romanised) if email is None else email,
            tier=_TIERS.pick(rng),
            status="inactive" if rng.random() < mix.inactive else "active",
            consent_sms=rng.random() >= 0.10,
            consent_email=rng.random() >= 0.10,
            consent_marketing=rng.random() < 0.40,
        )
        self.customers.append(c)
        return c

    def relocate(
        self, c: Person, locale: str, zone: str, name: str = "", romanised: str = ""
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

    def reachable(self, c: Person) -> None:
        """Make ``c`` an active customer with valid addresses and email consent."""
        c.status = "active"
        if not c.phone or c.phone in _BAD_PHONES:
            c.phone = self.phone(c.timezone, c.locale)
        if not c.email or c.email in _BAD_EMAILS:
            c.email = self.email(c.romanised)
        c.consent_email = True
        # A few have opted out of SMS: their touch goes by email.
        c.consent_sms = self.rng.random() >= 0.15

    def lunar_birth(
        self, key: int, years: tuple[int, int] = (1955, 2000), rng: random.Random | None = None
    ) -> dt.date:
        """A Gregorian birth date whose lunar month-day is ``key`` (in a regular month), in a
        lunar year from ``years`` on, drawn with ``rng`` (default: the population's)."""
        month, day = divmod(key, 100)
        year = (rng or self.rng).randint(*years)
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

    def _keep(self, p: Holding) -> Holding:
        self.policies.append(p)
        p.customer.policies.append(p)
        self.premium_schedule(p)
        return p

    def premium_schedule(self, p: Holding) -> None:
        """The premium schedule of a long-term policy (a term policy renews instead).

        Mostly annual, some semi-annual, quarterly or monthly, some annuities paid with a
        single premium (no due date). Due dates fall on the schedule from the start date; an
        active policy is paid up to the day before its next due date, except a few in their
        grace period (the last due date unpaid, at most ``GRACE_DAYS`` ago) and fewer beyond
        it (not yet marked lapsed); a lapsed policy is paid up to the due date it missed.
        """
        if p.renewal_date is not None or p.product not in _LONG_TERM:
            return
        rng = self.schedules
        if "年金" in p.product and rng.random() < 0.3:
            p.payment_frequency = PaymentFrequency.SINGLE.value
            return
        freq = PaymentFrequency(_FREQUENCIES.pick(rng))
        p.payment_frequency = freq.value
        if p.premium and freq.months < 12:
            # ``premium`` is one premium as it falls due: a share of the year's.
            share = Decimal(p.premium) * freq.months / 12
            p.premium = str(share.quantize(Decimal("0.01")))
        if p.status == "cancelled":
            return  # nothing falls due on a cancelled policy
        today = self.today
        months = freq.months
        upcoming = next_due_date(None, today, freq.value, p.start_date)
        assert upcoming is not None
        periods = ((upcoming.year - p.start_date.year) * 12 + upcoming.month) - p.start_date.month
        last = add_months(p.start_date, periods - months) if periods >= 2 * months else None
        due = upcoming
        roll = rng.random()
        if p.status == "lapsed":
            # The premium it missed, before the grace period of today (the first one, at the
            # start, for a policy that lapsed at once).
            back = today - dt.timedelta(days=GRACE_DAYS + 1 + rng.randint(0, 300))
            due = _on_or_before(p.start_date, months, max(back, p.start_date))
        elif last is not None and roll < 0.08:
            behind = (today - last).days
            if roll < 0.06 and 0 < behind <= GRACE_DAYS:
                due = last  # in its grace period
            elif roll >= 0.06 and behind > GRACE_DAYS:
                due = last  # beyond it, not yet marked lapsed
        p.premium_due_date = due
        p.paid_through = due - dt.timedelta(days=1)

    def product(self, locale: str) -> tuple[str, bool, tuple[int, int]]:
        """A product of the market of ``locale``: (name, long_term, premium bounds)."""
        return self.rng.choice(_PRODUCTS[locale])

    def list_price(self, product: str) -> Decimal:
        """The middle of the premium range of ``product`` (one premium per product)."""
        low, high = next(b for ps in _PRODUCTS.values() for name, _, b in ps if name == product)
        return Decimal(f"{(low + high) // 2}.00")

    def policy_count(self) -> int:
        """How many policies a customer holds (0 to 3, drawn with the mix's weights)."""
        return int(self._policy_counts.pick(self.rng))

    def policy(
        self,
        c: Person,
        start: dt.date,
        *,
        long_term: bool,
        renewal: dt.date | None = None,
        status: str = "active",
        policy_id: str = "",
    ) -> Holding:
        """A policy of a product of the customer's market (a term policy renews a year after
        ``start`` unless ``renewal`` is given), kept in ``policies``."""
        products = [p for p in _PRODUCTS[c.locale] if p[1] is long_term]
        product, _, bounds = self.rng.choice(products)
        if not long_term and renewal is None:
            renewal = add_years(start, 1)
        premium = self.premium(bounds)
        return self._keep(Holding(c, product, start, renewal, status, premium, policy_id))

    def random_policies(self, c: Person) -> None:
        """The customer's policies of the last 20 years (none to three, per the mix), with a
        purchase event for a recent one and a settled claim for a few older ones."""
        rng = self.rng
        mix = self.mix
        today = self.today
        earliest = today - dt.timedelta(days=20 * 365)
        if c.birth_date is not None:
            adult = add_years(c.birth_date, 18)
            if adult < today - dt.timedelta(days=60):
                earliest = max(earliest, adult)
        for _ in range(self.policy_count()):
            product, long_term, bounds = self.product(c.locale)
            status = _POLICY_STATUS.pick(rng)
            recent = status == "active" and rng.random() < mix.recent_purchase
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
                renewal = add_years(start, years)
                while status == "active" and renewal <= today:
                    years += 1
                    renewal = add_years(start, years)
            premium = "" if rng.random() < 0.04 else self.premium(bounds)
            p = self._keep(Holding(c, product, start, renewal, status, premium))
            if recent:
                self.purchase(p, start, (rng.randint(8, 20), rng.choice((0, 10, 25, 40, 55))))
            elif rng.random() < mix.claim and start < today - dt.timedelta(days=60):
                self.claim(p)

    # -- agents and families -------------------------------------------------------------

    def agents_and_relations(self) -> None:
        """Agents for the customers made so far (one per ``mix.customers_per_agent``, at
        least ``mix.min_agents``, one of each locale first), each customer given an agent of
        their locale; some customers in the segment "group"; family members for some.

        The first agent manages the first agent of each other locale, and the first of each
        locale the others of that locale. Drawn with ``self.family``: the customers, policies
        and events drawn so far or later are those of the same seed without this call.
        """
        rng, mix = self.family, self.mix
        count = max(mix.min_agents, round(len(self.customers) / mix.customers_per_agent))
        firsts = [locale for locale, _ in mix.locales]
        by_locale: dict[str, list[Agent]] = {}
        for n in range(count):
            locale = firsts[n] if n < len(firsts) else self._locales.pick(rng)
            agent = self.agent(len(self.agents) + 1, locale)
            leads = by_locale.setdefault(locale, [])
            if leads:
                agent.manager_id = leads[0].agent_id
            elif self.agents:
                agent.manager_id = self.agents[0].agent_id
            leads.append(agent)
            self.agents.append(agent)
        anyone = self.agents
        for c in self.customers:
            c.agent_id = rng.choice(by_locale.get(c.locale, anyone)).agent_id
            c.segment = "group" if rng.random() < mix.group else ""
            if rng.random() < mix.with_relations:
                self.family_of(c)

    def agent(self, number: int, locale: str) -> Agent:
        """An agent (``A`` and ``number`` in three digits) of ``locale``, with a work phone
        and an address at the agency's domain."""
        rng = self.family
        name, romanised = self.name(locale, rng)
        zone = self._zones[locale].pick(rng)
        agent_id = f"A{number:03d}"
        kept = (ch for ch in romanised.lower() if ch.isascii() and (ch.isalnum() or ch == "."))
        local = "".join(kept).strip(".") or "agent"
        return Agent(
            agent_id=agent_id,
            name=name,
            locale=locale,
            timezone=zone,
            phone=self.phone(zone, locale, rng),
            email=f"{local}.{agent_id.lower()}@agency.example.com",
        )

    def relative(
        self, c: Person, kind: str, birth: dt.date | None, calendar: str = "gregorian"
    ) -> Relative:
        """A family member of ``c`` (``R`` and six digits), kept in ``relatives``."""
        name, _ = self.name(c.locale, self.family)
        number = len(self.relatives) + 1
        r = Relative(f"R{number:06d}", c, kind, name, birth, calendar)
        self.relatives.append(r)
        return r

    def family_of(self, c: Person) -> None:
        """Family members of ``c``: a spouse for most, up to three children (born before
        ``today``) and parents for some; a few without a birth date, some of the
        non-English ones on the lunar calendar."""
        rng = self.family
        own = c.birth_date or dt.date(rng.randint(1955, 2000), rng.randint(1, 12), 15)

        def born(years: tuple[int, int]) -> dt.date:
            return own + dt.timedelta(days=round(rng.uniform(*years) * 365.25))

        members: list[tuple[str, dt.date]] = []
        if rng.random() < 0.7:
            members.append(("spouse", born((-6, 6))))
        members.extend(("child", born((22, 40))) for _ in range(rng.choice((0, 1, 1, 2, 2, 3))))
        members.extend(("parent", born((-38, -20))) for _ in range(rng.choice((0, 0, 1, 2))))
        for kind, day in members:
            if day >= self.today:  # a child not born yet
                continue
            birth = None if rng.random() < 0.05 else day
            lunar = c.locale != "en" and rng.random() < self.mix.lunar_relation
            if lunar and birth is not None and in_lunar_range(birth):
                self.relative(c, kind, birth, "lunar")
            else:
                self.relative(c, kind, birth)

    # -- events --------------------------------------------------------------------------

    def purchase(self, p: Holding, day: dt.date, at: tuple[int, int]) -> Happening:
        """A ``policy_purchased`` event on the customer's local ``day`` at ``at`` (h, m)."""
        payload = {
            "channel": self.rng.choice(_PURCHASE_CHANNELS),
            "product": p.product,
            "premium": p.premium or None,
        }
        when = local_time(day, *at, p.customer.timezone)
        return self._event(Happening("policy_purchased", p.customer, p, when, payload))

    def claim(self, p: Holding, day: dt.date | None = None) -> Happening:
        """A ``claim_settled`` event on ``day`` (by default 2 to 30 days ago)."""
        rng = self.rng
        if day is None:
            day = self.today - dt.timedelta(days=rng.randint(2, 30))
        when = local_time(day, rng.randint(9, 17), rng.choice((0, 15, 30, 45)), p.customer.timezone)
        payload = {
            "claim_id": f"CL{day:%Y%m%d}{rng.randint(1, 999):03d}",
            "amount": f"{rng.randint(3, 400) * 100}.00",
            "currency": _CURRENCY.get(p.customer.timezone or DEFAULT_TIMEZONE, "CNY"),
        }
        return self._event(Happening("claim_settled", p.customer, p, when, payload))

    def complaint(
        self,
        c: Person,
        day: dt.date,
        at: tuple[int, int],
        kind: str = "complaint_resolved",
        *,
        rng: random.Random | None = None,
        case_id: str | None = None,
    ) -> Happening:
        """A complaint event (``kind``: by default ``complaint_resolved``) on the customer's
        local ``day``, about one of their policies half of the time; ``rng``: the generator
        to draw from (the population's by default)."""
        rng = rng or self.rng
        own = c.policies
        policy = rng.choice(own) if own and rng.random() < 0.5 else None
        payload = {
            "case_id": case_id or f"CS{day:%Y%m%d}{rng.randint(1, 999):03d}",
            "channel": rng.choice(_COMPLAINT_CHANNELS),
            "topic": rng.choice(_COMPLAINT_TOPICS),
        }
        if kind != "complaint_resolved":  # ``topic`` is the resolution's older word
            payload["category"] = payload.pop("topic")
            if kind == "complaint_received":
                payload["severity"] = rng.choice(("low", "medium", "high"))
            else:
                payload.pop("channel")
        when = local_time(day, *at, c.timezone)
        return self._event(Happening(kind, c, policy, when, payload))

    def _event(self, e: Happening) -> Happening:
        self.events.append(e)
        return e

    # -- rows ----------------------------------------------------------------------------

    def csv_rows(self) -> dict[str, list[dict[str, str]]]:
        """Everything made so far as CSV rows for "customers", "policies", "events",
        "agents" and "relations" (the last two empty unless ``agents_and_relations`` ran).

        Policy ids (``P`` and six digits) follow the customers and their start dates; events
        are numbered (``E`` and six digits) in the order they happened.
        """
        order = {c.customer_id: i for i, c in enumerate(self.customers)}
        self.policies.sort(key=lambda p: (order[p.customer.customer_id], p.start_date))
        for number, p in enumerate(self.policies, 1):
            p.policy_id = f"P{number:06d}"
        self.events.sort(key=lambda e: e.occurred_at.astimezone(dt.timezone.utc))
        return {
            "customers": [c.csv_row() for c in self.customers],
            "policies": [p.csv_row() for p in self.policies],
            "events": [e.csv_row(f"E{n:06d}") for n, e in enumerate(self.events, 1)],
            "agents": [a.csv_row() for a in self.agents],
            "relations": [r.csv_row() for r in self.relatives],
        }
