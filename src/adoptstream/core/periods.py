"""Calendar periods over users' dates of use (CONTRACT 3.2/3.3): active days and lifecycle.

`UseDates` aggregates the dates of use of many users for one feature ('*': any). A user with dates
d1 < ... < dn (the latest `USE_DAYS_KEPT` days of them) and earliest use e contributes, at date D and
for a period of N days whose current period C starts at x = D - N + 1 and previous period P at
x - N (an event dated after D counts as dated D):

* ranks: 1 at (d, k) for its k-th latest date d. Users with at least k dates in C: those with a
  rank (d >= x, k); exactly k = at least k minus at least k + 1. Used in C: rank 1 with d >= x;
  dormant: rank 1 with d in P.
* returns: 1 at (b, b - a) for each date b and the date a before it: gap 0 when b is e (the first
  use ever), `GAP_CAP` when a is before every previous period (or an earlier use no longer kept).
  A user used in C has exactly one return with a < x <= b: new when the gap is 0, returning when
  a >= x - N (a is in P), resurrecting when a < x - N.
* next-day fixes: a user whose latest date L follows a use on L - 1 has one date too many in C when
  L = D + 1 (both count as D): the ranks of its dates without L, minus those with them, kept per L
  and counted when L = D + 1. Only L after the state stage's date can be used: older ones are
  dropped at its day turn and never added again.

Only dates from `RECENT_DAYS` before a user's latest date contribute (older ones are in no C).
Counts are keyed by absolute dates; the answers for one date (`Live`) are kept up to date as counts
change and slid to the next date at the day turn, which costs a few hundred lookups per feature
whatever the number of users: neither a scrape nor the day turn walks all the counts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from adoptstream.core.state import USE_DAYS_KEPT

PERIODS = (1, 7, 30)  # N of the active-days and lifecycle periods
ACTIVE_DAYS_PERIODS: dict[str, int] = {"7d": 7, "30d": 30}
LIFECYCLE_PERIODS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30}
LIFECYCLE_STATES = ("new", "returning", "resurrecting", "dormant")
_NEW, _RETURNING, _RESURRECTING, _DORMANT = range(4)
RECENT_DAYS = 30  # dates before the latest minus this are in no C: C starts at D - 29 >= latest - 30
MAX_RANK = RECENT_DAYS + 1  # exactly 30 dates of 30 = at least 30 minus at least 31 (D + 1 and D)
GAP_CAP = USE_DAYS_KEPT + 1  # a previous use 62 days back is before P of every period (P >= D - 59)
RANK_SLOTS, GAP_SLOTS = 32, 64  # keys pack (date, k) and (date, gap) into one int
SLIDE_DAYS_MAX = 100  # further than this, answers are computed again rather than slid
_NO_DATE = 1 << 62  # later than any date
assert MAX_RANK < RANK_SLOTS and GAP_CAP < GAP_SLOTS


@dataclass(slots=True)
class Engagement:
    """Section 3 numbers of one feature at one date."""

    active_days: dict[str, list[int]]  # period -> users by number of dates in C (index 0: 1 date)
    lifecycle: dict[str, dict[str, int]]  # period -> state -> users


class Live:
    """The answers of every period at one date, from counts given to it one by one."""

    __slots__ = ("at_least", "fix_day", "p", "states", "today", "x")

    def __init__(self, today: int) -> None:
        self.today = today
        self.fix_day = today + 1  # the latest date whose next-day fixes count
        self.x = tuple(today - n + 1 for n in PERIODS)  # first date of C (1d, 7d, 30d)
        self.p = tuple(x - n for x, n in zip(self.x, PERIODS, strict=True))  # first date of P
        self.at_least = [[0] * (MAX_RANK + 2) for _ in PERIODS]  # users with >= k dates in C
        self.states = [[0] * 4 for _ in PERIODS]

    def copy(self) -> Live:
        other = Live(self.today)
        other.at_least = [list(row) for row in self.at_least]
        other.states = [list(row) for row in self.states]
        return other

    def count_date(self, day: int, k: int, gap: int, count: int) -> None:
        """`count` users more whose k-th latest date of use is `day` (k = 0: no rank to count) and whose
        date of use before it was `gap` days earlier (0: none, the first use ever; -1: no return to
        count). The rules of the module docstring, for the three periods at once."""
        x, p = self.x, self.p
        if day < x[2]:  # in no C; a latest date may be in the P of 30d (P of 7d and 1d start later)
            if k == 1 and day >= p[2]:
                self.states[2][_DORMANT] += count
            return
        at_least, states = self.at_least, self.states
        # 30d, 7d, 1d: a shorter period's P starts after a longer one's C does, so a date before one
        # C is in no shorter period's C or P
        for i in (2, 1, 0):
            if day < x[i]:
                if k == 1 and day >= p[i]:
                    states[i][_DORMANT] += count
                return
            if k:
                at_least[i][k] += count
            if gap == 0:
                states[i][_NEW] += count
            elif gap > 0 and day - gap < x[i]:  # the return into C
                states[i][_RETURNING if day - gap >= p[i] else _RESURRECTING] += count

    def count_fix(self, day: int, k: int, count: int) -> None:
        """A next-day fix of the ranks (one of a latest date `fix_day`)."""
        for i, x in enumerate(self.x):
            if day >= x:
                self.at_least[i][k] += count

    def engagement(self) -> Engagement:
        at_least = dict(zip(PERIODS, self.at_least, strict=True))
        states = dict(zip(PERIODS, self.states, strict=True))
        return Engagement(
            {
                p: [at_least[n][k] - at_least[n][k + 1] for k in range(1, n + 1)]
                for p, n in ACTIVE_DAYS_PERIODS.items()
            },
            {p: dict(zip(LIFECYCLE_STATES, states[n], strict=True)) for p, n in LIFECYCLE_PERIODS.items()},
        )


def _counts() -> defaultdict[int, int]:
    return defaultdict(int)


class UseDates:
    """Ranks, returns and next-day fixes of many users' dates of use of one feature, and their live
    answers at the state stage's date (once it is set with `go_to`)."""

    __slots__ = ("fixes", "live", "ranks", "returns")

    def __init__(self) -> None:
        self.ranks: defaultdict[int, int] = defaultdict(int)  # day * RANK_SLOTS + k -> users
        self.returns: defaultdict[int, int] = defaultdict(int)  # day * GAP_SLOTS + gap -> users
        self.fixes: defaultdict[int, defaultdict[int, int]] = defaultdict(_counts)  # L -> ranks
        self.live: Live | None = None

    def add(self, days: list[int], first_day: int, sign: int, floor: int, fix_floor: int) -> None:
        """Add (sign=+1) or remove (-1) one user's dates of use (ascending, from its state) whose
        earliest use is dated `first_day`; counts dated before `floor`, and fixes of a latest date
        before `fix_floor`, are skipped (the totals dropped them)."""
        ranks, returns, live = self.ranks, self.returns, self.live
        last = days[-1]
        if len(days) == 1:  # the most common history, written out
            if last >= floor:
                gap = 0 if first_day == last else GAP_CAP
                ranks[last * RANK_SLOTS + 1] += sign
                returns[last * GAP_SLOTS + gap] += sign
                if live is not None:
                    live.count_date(last, 1, gap, sign)
            return
        recent = last - RECENT_DAYS
        i = len(days) - 1
        k = 1
        while i >= 0:
            day = days[i]
            if day < recent:
                break
            if day >= floor:
                if i:
                    gap = day - days[i - 1]
                    if gap > GAP_CAP:
                        gap = GAP_CAP
                else:  # the earliest date kept: the first use ever, or one after uses no longer kept
                    gap = 0 if first_day == day else GAP_CAP
                ranks[day * RANK_SLOTS + k] += sign
                returns[day * GAP_SLOTS + gap] += sign
                if live is not None:
                    live.count_date(day, k, gap, sign)
            i -= 1
            k += 1
        if days[-2] == last - 1 and last >= fix_floor:
            fixes = self.fixes[last]
            counted = live is not None and live.fix_day == last
            for k in range(1, MAX_RANK + 1):  # ranks without `last` (each one rank up) minus with it
                i = len(days) - k
                if i < 0 or days[i] < recent:
                    break
                fixes[days[i] * RANK_SLOTS + k] -= sign
                if counted:
                    live.count_fix(days[i], k, -sign)  # type: ignore[union-attr]
                if i and days[i - 1] >= recent:
                    fixes[days[i - 1] * RANK_SLOTS + k] += sign
                    if counted:
                        live.count_fix(days[i - 1], k, sign)  # type: ignore[union-attr]

    def drop_before(self, floor: int, fix_floor: int, old_floor: int) -> None:
        """Forget counts dated before `floor` (those before `old_floor` are gone already) and fixes of
        a latest date before `fix_floor`: none of them is in any period from the state stage's date on."""
        for counts, slots in ((self.ranks, RANK_SLOTS), (self.returns, GAP_SLOTS)):
            drop_keys(counts, old_floor * slots, floor * slots)
        for last in [last for last in self.fixes if last < fix_floor]:
            del self.fixes[last]

    def go_to(self, today: int) -> None:
        """Keep the live answers at date `today`: slid from the current date when that is cheaper."""
        live = self.live
        if live is not None and live.today <= today <= live.today + SLIDE_DAYS_MAX:
            while live.today < today:
                self._slide(live)
        else:
            self.live = self._computed(today)

    def engagement(self, today: int) -> Engagement:
        """Active days and lifecycle at date `today` (read only)."""
        live = self.live
        if live is not None and live.today == today:
            return live.engagement()
        if live is not None and live.today < today <= live.today + SLIDE_DAYS_MAX:
            ahead = live.copy()  # the scrape's clock passed midnight before the state stage's
            while ahead.today < today:
                self._slide(ahead)
            return ahead.engagement()
        return self._computed(today).engagement()

    def _computed(self, today: int) -> Live:
        """The answers at `today` from every count (what the slides keep up to date)."""
        live = Live(today)
        for key, count in self.ranks.items():
            if count:
                day, k = divmod(key, RANK_SLOTS)
                live.count_date(day, k, -1, count)
        for key, count in self.returns.items():
            if count:
                day, gap = divmod(key, GAP_SLOTS)
                live.count_date(day, 0, gap, count)
        for key, count in self.fixes.get(live.fix_day, {}).items():
            live.count_fix(*divmod(key, RANK_SLOTS), count)
        return live

    def _slide(self, live: Live) -> None:
        """Move `live` to the next date: only the counts at the dates that enter or leave a period."""
        ranks, returns = self.ranks, self.returns
        for key, count in self.fixes.get(live.fix_day, {}).items():  # their date passes
            live.count_fix(*divmod(key, RANK_SLOTS), -count)
        for i, (x, p) in enumerate(zip(live.x, live.p, strict=True)):
            at_least, states = live.at_least[i], live.states[i]
            for k in range(1, MAX_RANK + 1):  # the dates of x leave C
                count = ranks.get(x * RANK_SLOTS + k)
                if count:
                    at_least[k] -= count
            # a latest date of x enters P, one of p leaves it
            states[_DORMANT] += ranks.get(x * RANK_SLOTS + 1, 0) - ranks.get(p * RANK_SLOTS + 1, 0)
            for gap in range(GAP_CAP + 1):  # returns on date x leave C
                count = returns.get(x * GAP_SLOTS + gap)
                if count:
                    if gap == 0:
                        states[_NEW] -= count
                    else:
                        states[_RETURNING if x - gap >= p else _RESURRECTING] -= count
            for b in range(x + 1, x + GAP_CAP + 1):
                # a return from date x now crosses into C; one from p now comes from before P
                count = returns.get(b * GAP_SLOTS + b - x)
                if count:
                    states[_RETURNING] += count
                if b - p <= GAP_CAP:
                    count = returns.get(b * GAP_SLOTS + b - p)
                    if count:
                        states[_RETURNING] -= count
                        states[_RESURRECTING] += count
        live.today += 1
        live.fix_day += 1
        live.x = tuple(x + 1 for x in live.x)
        live.p = tuple(p + 1 for p in live.p)
        for key, count in self.fixes.get(live.fix_day, {}).items():
            live.count_fix(*divmod(key, RANK_SLOTS), count)

    def merge(self, other: UseDates, floor: int, fix_floor: int) -> None:
        """Add another's counts (from `floor` and `fix_floor` on); live answers are not merged."""
        for mine, theirs, slots in (
            (self.ranks, other.ranks, RANK_SLOTS),
            (self.returns, other.returns, GAP_SLOTS),
        ):
            first = floor * slots
            for key, count in theirs.items():
                if key >= first:
                    mine[key] += count
        for last, fixes in other.fixes.items():
            if last >= fix_floor:
                mine_fixes = self.fixes[last]
                for key, count in fixes.items():
                    mine_fixes[key] += count
        self.live = None

    def encode(self) -> list:
        return [
            [[k, n] for k, n in self.ranks.items() if n],
            [[k, n] for k, n in self.returns.items() if n],
            [
                [last, [[k, n] for k, n in f.items() if n]]
                for last, f in self.fixes.items()
                if any(f.values())
            ],
        ]

    @classmethod
    def decode(cls, fields: list) -> UseDates:
        ranks, returns, fixes = fields
        out = cls()
        out.ranks.update(ranks)
        out.returns.update(returns)
        for last, pairs in fixes:
            out.fixes[last].update(pairs)
        return out

    def __eq__(self, other: object) -> bool:  # the counts (the live answers follow from them)
        if not isinstance(other, UseDates):
            return NotImplemented
        return (
            _nonzero(self.ranks) == _nonzero(other.ranks)
            and _nonzero(self.returns) == _nonzero(other.returns)
            and {d: _nonzero(f) for d, f in self.fixes.items() if any(f.values())}
            == {d: _nonzero(f) for d, f in other.fixes.items() if any(f.values())}
        )


def drop_keys(counts: dict[int, int], start: int, stop: int) -> None:
    """Delete every key before `stop`, knowing there is none before `start`: one by one for a day turn's
    few dates (whatever the number of keys), by a scan when the range is wide."""
    if stop - start <= 4_096:
        pop = counts.pop
        for key in range(start, stop):
            pop(key, None)
    else:
        for key in [key for key in counts if key < stop]:
            del counts[key]


def _nonzero(counts: dict[int, int]) -> dict[int, int]:
    return {k: n for k, n in counts.items() if n}


class DatedCounts:
    """Users by (date, value) (feedback: the score of the latest answer; signups: value 0), and the
    sums per value over the current period C of each of `periods` (N days), kept live at the state
    stage's date like `UseDates`' answers."""

    __slots__ = ("counts", "earliest", "firsts", "periods", "slots", "sums", "today")

    def __init__(self, periods: tuple[int, ...], slots: int) -> None:
        self.periods = periods
        self.slots = slots  # values are 0 ... slots - 1
        self.counts: defaultdict[int, int] = defaultdict(int)  # day * slots + value -> users
        self.today: int | None = None
        self.sums: list[list[int]] = []  # [period][value], at `today`
        self.firsts: tuple[int, ...] = ()  # the first date of each C at `today`
        self.earliest = _NO_DATE  # the first date of the longest C (none before `go_to`)

    def add(self, day: int, value: int, count: int) -> None:
        self.counts[day * self.slots + value] += count
        if day >= self.earliest:  # in some C (a date after D counts as D); never before `go_to`
            for first, row in zip(self.firsts, self.sums, strict=True):
                if day >= first:
                    row[value] += count

    def go_to(self, today: int) -> None:
        current = self.today
        if current is not None and current <= today <= current + SLIDE_DAYS_MAX:
            while current < today:
                self._slide(self.sums, current)
                current += 1
        else:
            self.sums = self._computed(today)
        self.today = today
        self.firsts = tuple(today - n + 1 for n in self.periods)
        self.earliest = min(self.firsts)

    def at(self, today: int) -> list[list[int]]:
        """Sums per period and value at date `today` (read only)."""
        if self.today is not None and self.today <= today <= self.today + SLIDE_DAYS_MAX:
            sums, day = [list(row) for row in self.sums], self.today
            while day < today:  # the scrape's clock passed midnight before the state stage's
                self._slide(sums, day)
                day += 1
            return sums
        return self._computed(today)

    def _computed(self, today: int) -> list[list[int]]:
        sums = [[0] * self.slots for _ in self.periods]
        for key, count in self.counts.items():
            day, value = divmod(key, self.slots)
            for i, n in enumerate(self.periods):
                if day >= today - n + 1:
                    sums[i][value] += count
        return sums

    def _slide(self, sums: list[list[int]], today: int) -> None:
        """`sums` at `today` moved to the next date: the first date of each C leaves it."""
        get, slots = self.counts.get, self.slots
        for i, n in enumerate(self.periods):
            first = (today - n + 1) * slots
            row = sums[i]
            for value in range(slots):
                count = get(first + value)
                if count:
                    row[value] -= count

    def drop_before(self, floor: int, old_floor: int) -> None:
        drop_keys(self.counts, old_floor * self.slots, floor * self.slots)

    def merge(self, other: DatedCounts, floor: int) -> None:
        first = floor * self.slots
        for key, count in other.counts.items():
            if key >= first:
                self.counts[key] += count
        self.today, self.sums, self.firsts, self.earliest = None, [], (), _NO_DATE

    def __eq__(self, other: object) -> bool:  # the counts (the sums follow from them)
        if not isinstance(other, DatedCounts):
            return NotImplemented
        return _nonzero(self.counts) == _nonzero(other.counts)
