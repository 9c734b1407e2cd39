"""The demo store's data: a population in which every shipped rule fires today, as CSV files.

``make demo`` / ``care demo`` load these through the ordinary CSV importer, so every row follows
the import conventions (SPEC section 4). The random population and the row formats are
``store/population.py``'s (the generator the benchmarks use too); this module adds what only
the demo needs. The data is a pure function of ``(today, customers, seed)`` and the clock is
never read. Besides the random population a fixed set of *guaranteed* customers makes every
shipped rule fire on ``today``:

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
  a ``complaint_resolved`` event three local days ago;
* long-term policies with an unpaid premium due today + 30 and + 7 (premium-due-reminder),
  today - 7 and - 30 (premium-grace-reminder), twice today - 45 (premium-lapse-warning: the
  agent's task) and one today - 75, beyond the grace period (``PREMIUM_OFFSETS``), each of a
  tier C or D customer nothing else is due for today;
* the complaint lifecycle (``complaints_open``): a ``complaint_received`` just after local
  midnight today (acknowledged today, the agent's call-back), one received five local days
  ago and still open (the escalation to the agent's manager today), and one received five
  days ago and resolved two days ago (its escalation suppressed ``case_closed``), each of a
  customer in the default time zone nothing else is due for today, whose agent has a manager.

Every long-term policy (life, annuity, education) has a premium schedule
(``Population.premium_schedule``): mostly annual, some semi-annual, quarterly or monthly, some
annuities a single premium; paid up to the day before the next due date, a few in their grace
period and fewer beyond it.

The guaranteed customers are active and reachable (a valid address with consent on at least
one channel) unless stated otherwise, and sit at random places among the ids.

Every customer has an agent (``Population.agents_and_relations``: one agent per 200 customers,
at least 3, some managing others), about 10 % are in the segment ``group``, and about a third
have family members on record. Three of the guaranteed renewal customers have a family member
whose birthday is today: a child (Gregorian), a spouse (lunar, when a lunar birthday is due
today) and a parent (Gregorian). These are drawn apart from the rest (``Population.family``):
the customers, policies and events are those the demo made before it had agents.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from ..dates import LUNAR_MAX_YEAR, is_leap_year, lunar_anniversary_keys
from .models import CANONICAL_COLUMNS
from .population import BAD_PHONES, DEFAULT_TIMEZONE, Person, Population, add_years

# The CSV headers are exactly the store's canonical column names (SPEC section 4).
CUSTOMER_COLUMNS = CANONICAL_COLUMNS["customer"]
POLICY_COLUMNS = CANONICAL_COLUMNS["policy"]
EVENT_COLUMNS = CANONICAL_COLUMNS["event"]

AGENT_COLUMNS = CANONICAL_COLUMNS["agent"]
RELATION_COLUMNS = CANONICAL_COLUMNS["relation"]

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": CUSTOMER_COLUMNS,
    "policies": POLICY_COLUMNS,
    "events": EVENT_COLUMNS,
    "agents": AGENT_COLUMNS,
    "relations": RELATION_COLUMNS,
}
TABLE_OF_FILE = {
    "customers": "customer",
    "policies": "policy",
    "events": "event",
    "agents": "agent",
    "relations": "relation",
}
"""The importer's table (``import_csv``) of each demo file."""

RENEWAL_OFFSETS = (30, 7, 1)
# Days from today to the due date of the guaranteed premiums (``_Demo.premiums_due``): the
# premium-due-reminder's 30 and 7 days before, premium-grace-reminder's 7 and 30 after,
# premium-lapse-warning's 45 after (twice), and one 75 days after, beyond the grace period.
PREMIUM_OFFSETS = (30, 7, -7, -30, -45, -45, -75)

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


class _Demo(Population):
    """The random population plus the guaranteed customers of the module docstring."""

    def __init__(self, today: dt.date, customers: int, seed: int) -> None:
        super().__init__(today, seed)
        self.count = customers

    def birthday_today(self) -> dt.date:
        """A Gregorian birth date whose birthday is today (29 February only in leap years)."""
        years = range(1950, 2006)
        if (self.today.month, self.today.day) == (2, 29):
            years = range(1952, 2006, 4)
        return dt.date(self.rng.choice(years), self.today.month, self.today.day)

    # -- guaranteed customers ------------------------------------------------------------

    def shape(self, c: Person, role: str, slot: int) -> None:
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
            c.phone = rng.choice(BAD_PHONES)
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

    def attach(self, c: Person, role: str, slot: int) -> None:
        """Give ``c`` the policies and events of its role."""
        today = self.today
        yesterday = today - dt.timedelta(days=1)
        if role in ("renewal", "birthday-and-renewal"):
            offset = 7 if role == "birthday-and-renewal" else RENEWAL_OFFSETS[slot % 3]
            renewal = today + dt.timedelta(days=offset)
            self.policy(c, add_years(renewal, -1), long_term=False, renewal=renewal)
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
        return add_years(today, -(1, 3, 7)[slot])

    # -- the whole store -----------------------------------------------------------------

    def build(self) -> None:
        rng = self.rng
        for n in range(self.count):
            self.customer(n + 1)
        roles: list[tuple[Person, str, int]] = []
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
        self.agents_and_relations()
        self.family_birthdays([c for c, role, _ in roles if role == "renewal"])
        taken = {c.customer_id for c, _, _ in roles}
        taken |= self.premiums_due(taken)
        self.complaints_open(taken)

    def premiums_due(self, taken: set[str]) -> set[str]:
        """Long-term policies whose premium reminders are due today (``PREMIUM_OFFSETS``:
        before the due date, in the grace period, the agent's lapse warning, one beyond the
        grace period that nothing reminds of), each of a customer nothing else is due for
        today: active, tier C or D (no check-in), reachable by SMS and email, no birthday,
        renewal, review or event. Drawn apart (``Population.schedules``): everything else is
        as it was. The policy's start date moves to an anniversary of its new due date."""
        today = self.today
        rng = self.schedules
        candidates = [
            (c, p)
            for c in self.customers
            if c.customer_id not in taken and self._quiet_today(c)
            for p in c.policies
            if p.payment_frequency == "annual"
            and p.status == "active"
            and p.start_date <= today - dt.timedelta(days=400)
        ]
        rng.shuffle(candidates)
        used: set[str] = set()
        offsets = list(PREMIUM_OFFSETS)
        for c, p in candidates:
            if not offsets:
                break
            if c.customer_id in used:
                continue
            used.add(c.customer_id)
            due = today + dt.timedelta(days=offsets.pop(0))
            p.premium_due_date = due
            p.paid_through = due - dt.timedelta(days=1)
            years = max(1, (due - p.start_date).days // 365)
            p.start_date = add_years(due, -years)
        return used

    def complaints_open(self, taken: set[str]) -> None:
        """The three complaint cases of the module docstring, drawn apart (their own random
        generator: everything else is as it was)."""
        today = self.today
        rng = self.cases
        managed = {a.agent_id for a in self.agents if a.manager_id}
        candidates = [
            c
            for c in self.customers
            if c.customer_id not in taken
            and self._quiet_today(c, ("A", "B", "C", "D"))
            and c.agent_id in managed
            and (c.timezone or DEFAULT_TIMEZONE) == DEFAULT_TIMEZONE
            and not any(
                p.premium_due_date
                and -75 <= (p.premium_due_date - today).days <= 30  # a premium reminder
                for p in c.policies
            )
        ]
        rng.shuffle(candidates)
        if len(candidates) < 3:
            return  # a tiny store: the lifecycle is left out
        fresh, still_open, resolved = candidates[:3]
        before = today - dt.timedelta(days=5)
        self.complaint(fresh, today, (0, 1), "complaint_received", rng=rng)
        self.complaint(still_open, before, (10, 30), "complaint_received", rng=rng)
        case = self.complaint(resolved, before, (11, 0), "complaint_received", rng=rng)
        self.complaint(
            resolved,
            today - dt.timedelta(days=2),
            (15, 0),
            "complaint_resolved",
            rng=rng,
            case_id=str((case.payload or {})["case_id"]),
        )

    def _quiet_today(self, c: Person, tiers: tuple[str, ...] = ("C", "D")) -> bool:
        """Whether nothing but a premium reminder could be due for ``c`` today (of ``tiers``:
        C and D have no cadence check-in)."""
        today = self.today
        if c.status != "active" or c.tier not in tiers:
            return False
        if not (c.phone and c.phone not in BAD_PHONES and c.consent_sms):
            return False
        if not (c.email and c.consent_email) or c.email not in self.emails:
            return False
        if c.birth_date is not None and (c.birth_date.month, c.birth_date.day) in (
            (today.month, today.day),
            (2, 29),
        ):
            return False
        if c.birthday_calendar == "lunar":
            return False
        if any(e.customer is c for e in self.events):
            return False
        for p in c.policies:
            if p.renewal_date is not None and abs((p.renewal_date - today).days) <= 31:
                return False
            if (p.start_date.month, p.start_date.day) == (today.month, today.day):
                return False
        return True

    def family_birthdays(self, reachable: list[Person]) -> None:
        """A child, a spouse and a parent whose birthday is today, of the first three of
        ``reachable`` (the spouse's lunar, when a lunar birthday is due today)."""
        today = self.today
        rng = self.family
        years = range(1950, 2006)
        if (today.month, today.day) == (2, 29):
            years = range(1952, 2006, 4)
        child, spouse, parent = reachable[:3]
        self.relative(child, "child", dt.date(rng.choice(years[-10:]), today.month, today.day))
        keys = lunar_anniversary_keys(today)
        if keys:
            self.relative(spouse, "spouse", self.lunar_birth(keys[0], rng=rng), "lunar")
        else:
            self.relative(spouse, "spouse", dt.date(rng.choice(years), today.month, today.day))
        self.relative(parent, "parent", dt.date(rng.choice(years[:10]), today.month, today.day))


def demo_rows(
    today: dt.date, customers: int = 240, seed: int = 7
) -> dict[str, list[dict[str, str]]]:
    """Rows for "customers", "policies", "events", "agents", "relations": each row maps
    exactly the column names above to CSV strings.

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
    demo = _Demo(today, customers, seed)
    demo.build()
    return demo.csv_rows()


def write_demo_csvs(
    directory: Path, today: dt.date, customers: int = 240, seed: int = 7
) -> dict[str, Path]:
    """Write customers.csv, policies.csv, events.csv, agents.csv, relations.csv (UTF-8, header
    row = column names, csv module) and return their paths keyed by file name ("customers",
    ...; ``TABLE_OF_FILE`` gives the importer's table of each)."""
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
