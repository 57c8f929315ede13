"""Rollout plan files: the four strategies, defaults, and errors that name file, line and field."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from adoptstream.rollout.durations import format_duration, humanize_duration, parse_duration
from adoptstream.rollout.plan import PlanError, load_plan_text, load_plans

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "rollouts" / "example.yaml"


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def problems(text: str, file: str = "plan.yaml") -> list[str]:
    with pytest.raises(PlanError) as info:
        load_plan_text(textwrap.dedent(text), file)
    return info.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


MINIMAL = """\
rollouts:
  - feature: checkout
    owner: payments-po
    strategy: big-bang
    start: 2027-03-02T08:00:00Z
"""


def test_example_plan_has_all_four_strategies() -> None:
    plans = load_plans([EXAMPLE])
    by_name = {r.name: r for r in plans.rollouts}
    assert {r.strategy for r in plans.rollouts} == {"big-bang", "phased", "pilot", "parallel"}
    phased = by_name["expense-reports-v2"]
    assert [w.name for w in phased.waves] == ["finance", "sales-and-support", "everyone-else"]
    assert phased.waves[0].start == ts("2027-03-02T08:00:00Z")  # +01:00 honoured
    assert phased.waves[0].deadline - phased.waves[0].start == 21 * 86400
    assert phased.waves[1].target == pytest.approx(0.7)
    assert phased.waves[2].stall.window_s == 5 * 86400 and phased.waves[2].stall.min_exposed == 100
    assert phased.waves[2].stall.min_progress == pytest.approx(0.01)  # the file's default kept
    assert phased.waves[0].curve == "s-curve"
    pilot = by_name["one-click-checkout"]
    assert pilot.waves[0].cohorts == ("site-lyon",)
    assert pilot.waves[0].start == ts("2027-03-09T00:00:00Z")  # a date is midnight UTC
    assert pilot.team == "payments"  # from owners:
    parallel = by_name["search-v3"]
    assert parallel.switchover is not None
    assert parallel.old_feature == "search.v2"
    assert parallel.switchover.target == pytest.approx(0.95)
    assert parallel.switchover.window == "7d"
    assert parallel.switchover.stall.min_progress == pytest.approx(0.02)
    big = by_name["dark-mode"]
    assert len(big.waves) == 1 and big.waves[0].cohorts == () and big.waves[0].cohorts_label == "(all)"
    assert plans.owners["payments-po"].webhook_url is not None
    assert plans.owner_names() == ["design-po", "discovery-po", "payments-po", "workplace-po"]


def test_defaults_are_sensible() -> None:
    rollout = load_plan_text(MINIMAL).rollouts[0]
    wave = rollout.waves[0]
    assert rollout.name == "checkout" and rollout.team == "payments-po"
    assert wave.name == "all"
    assert wave.target == pytest.approx(0.8)
    assert wave.duration_s == 30 * 86400
    assert wave.curve == "linear"
    assert (wave.stall.window_s, wave.stall.min_progress, wave.stall.min_exposed) == (3 * 86400, 0.01, 50)
    assert wave.stall.hold_s == 3600  # window/10, capped at an hour
    assert wave.behind_plan.tolerance == pytest.approx(0.1)
    assert wave.behind_plan.hold_s(wave.duration_s, wave.stall.window_s) == 7200


def test_short_windows_get_short_holds() -> None:
    plan = load_plan_text(MINIMAL + "    duration: 10m\n    stall: {window: 40s, min_exposed: 5}\n")
    wave = plan.rollouts[0].waves[0]
    assert wave.stall.hold_s == 4
    assert wave.behind_plan.hold_s(wave.duration_s, wave.stall.window_s) == 40  # at least the window


def test_wave_settings_inherit_rollout_then_file_defaults() -> None:
    plan = load_plan_text(
        textwrap.dedent(
            """\
            defaults:
              target: 70%
              stall: {window: 2d, min_exposed: 10}
            rollouts:
              - feature: reports
                owner: po
                strategy: phased
                start: 2027-01-01
                stall: {min_progress: 0.05}
                waves:
                  - {name: a, cohorts: [x]}
                  - {name: b, cohorts: [y], start: 2027-02-01, target: 0.9, stall: {window: 1d}}
            """
        )
    )
    a, b = plan.rollouts[0].waves
    assert a.start == ts("2027-01-01T00:00:00Z") and a.target == pytest.approx(0.7)
    assert (a.stall.window_s, a.stall.min_progress, a.stall.min_exposed) == (2 * 86400, 0.05, 10)
    assert b.start == ts("2027-02-01T00:00:00Z") and b.target == pytest.approx(0.9)
    assert (b.stall.window_s, b.stall.min_progress, b.stall.min_exposed) == (86400, 0.05, 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace("owner: payments-po", "ownr: payments-po"),
            [
                "plan.yaml:3: rollouts[0].ownr: unknown field 'ownr' (did you mean 'owner'?)",
                "plan.yaml:2: rollouts[0]: missing field 'owner'",
            ],
        ),
        (
            MINIMAL.replace("checkout", "Checkout"),
            ["plan.yaml:2: rollouts[0].feature: 'Checkout' is not a valid"],
        ),
        (
            MINIMAL.replace("big-bang", "bigbang"),
            [
                "plan.yaml:4: rollouts[0].strategy: 'bigbang' is not one of big-bang, phased, pilot, "
                "parallel (did you mean 'big-bang'?)"
            ],
        ),
        (
            MINIMAL.replace("2027-03-02T08:00:00Z", "2027-03-02T08:00:00"),
            ["plan.yaml:5: rollouts[0].start: '2027-03-02T08:00:00' has no UTC offset"],
        ),
        (
            MINIMAL.replace("2027-03-02T08:00:00Z", "next monday"),
            ["plan.yaml:5: rollouts[0].start: 'next monday'"],
        ),
        (MINIMAL + "    target: 1.5\n", ["plan.yaml:6: rollouts[0].target: 1.5 is out of range"]),
        (MINIMAL + "    target: 120%\n", ["plan.yaml:6: rollouts[0].target: 120% is out of range"]),
        (
            MINIMAL + "    duration: 3 days\n",
            ["plan.yaml:6: rollouts[0].duration: '3 days' is not a duration"],
        ),
        (
            MINIMAL + "    duration: 14\n",
            ["plan.yaml:6: rollouts[0].duration: expected a duration with a unit"],
        ),
        (
            MINIMAL + "    duration: 14d\n    deadline: 2027-04-01\n",
            ["plan.yaml:7: rollouts[0].deadline: give either deadline or duration, not both"],
        ),
        (
            MINIMAL + "    deadline: 2027-03-01\n",
            ["plan.yaml:6: rollouts[0].deadline: the deadline must come after the start"],
        ),
        (
            MINIMAL + "    stall: {window: 2d, min_exposed: 0}\n",
            ["plan.yaml:6: rollouts[0].stall.min_exposed: 0 is too small: must be at least 1"],
        ),
        (
            MINIMAL + "    stall: {windw: 2d}\n",
            ["plan.yaml:6: rollouts[0].stall.windw: unknown field 'windw' (did you mean 'window'?)"],
        ),
        (
            MINIMAL + "    curve: exponential\n",
            ["plan.yaml:6: rollouts[0].curve: 'exponential' is not one of linear, s-curve, step"],
        ),
        (
            MINIMAL + "    cohorts: ['" + "x" * 65 + "']\n",
            ["plan.yaml:6: rollouts[0].cohorts[0]: cohort 'xxxxxxxxxxxxxxxxxxxx'... is 65 characters long"],
        ),
        (
            MINIMAL + '    cohorts: ["tab\\there"]\n',
            ["plan.yaml:6: rollouts[0].cohorts[0]: cohort 'tab\\there' holds non-printable characters"],
        ),
        (
            MINIMAL + "    old_feature: legacy\n",
            ["plan.yaml:6: rollouts[0].old_feature: 'old_feature' is only for parallel rollouts"],
        ),
        (
            MINIMAL + "    satisfaction: {min_answers: 50}\n",
            ["plan.yaml:6: rollouts[0].satisfaction: a satisfaction floor needs 'nps' (e.g. nps: 20) and/or"],
        ),
        (
            MINIMAL + "    satisfaction: {nps: 120, csat: 8, period: 60d}\n",
            [
                "plan.yaml:6: rollouts[0].satisfaction.nps: 120 is out of range: must be in [-100, 100]",
                "plan.yaml:6: rollouts[0].satisfaction.csat: 8 is out of range: must be in [0, 1]",
                "plan.yaml:6: rollouts[0].satisfaction.period: '60d' is not one of 30d, 90d",
            ],
        ),
        (
            MINIMAL + "    satisfaction:\n      nps: 20\n      min_answer: 5\n",
            ["plan.yaml:8: rollouts[0].satisfaction.min_answer: unknown field 'min_answer' (did you mean"],
        ),
    ],
)
def test_errors_name_file_line_and_field(text: str, expected: list[str]) -> None:
    found = problems(text)
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_yaml_syntax_error_names_the_line() -> None:
    found = problems("rollouts:\n  - feature: x\n    owner: [unclosed\n    strategy: big-bang\n")
    assert len(found) == 1 and found[0].startswith("plan.yaml:4: not valid YAML")


def test_empty_and_wrong_shaped_files() -> None:
    assert one_problem("") == "plan.yaml:1: the file is empty: it needs 'rollouts:', a list of rollouts"
    assert one_problem("rollouts: 3\n").startswith("plan.yaml:1: rollouts: expected a list")
    assert one_problem("rollouts: []\n").startswith("plan.yaml:1: rollouts: 'rollouts' is empty")
    assert one_problem("- a\n- b\n").startswith("plan.yaml:1: expected a mapping")
    assert one_problem("version: 2\n" + MINIMAL).startswith("plan.yaml:1: version: only version 1")


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        """\
        rollouts:
          - feature: a
            owner: po
            strategy: phased
            waves:
              - {name: w1, cohorts: [x], start: 2027-01-01, target: 2}
              - {name: w2, cohorts: [x], start: 2027-01-01}
          - feature: b
            strategy: pilot
            owner: po
            waves:
              - {name: p, cohorts: [x, y], start: 2027-01-01, duration: 10d}
              - {name: rest, cohorts: [z], start: 2027-01-05}
        """
    )
    assert found == [
        "plan.yaml:6: rollouts[0].waves[0].target: 2 is out of range: must be in [0, 1]",
        "plan.yaml:12: rollouts[1].waves[0]: the pilot wave has exactly one cohort, found 2",
        "plan.yaml:13: rollouts[1].waves[1]: wave 'rest' starts before the pilot's deadline "
        "(2027-01-11T00:00:00Z): the rest follows only once the pilot has succeeded",
    ]


def test_strategy_rules() -> None:
    base = "rollouts:\n  - feature: a\n    owner: po\n    strategy: {s}\n"
    waves = "    waves:\n      - {{name: w1, cohorts: [x], start: 2027-01-01}}\n" + (
        "      - {{name: w2, cohorts: [y], start: 2027-01-01}}\n"
    )
    assert one_problem(base.format(s="big-bang") + waves.format()) == (
        "plan.yaml:6: rollouts[0].waves: a big-bang rollout has exactly one wave (all cohorts at once), "
        "found 2"
    )
    assert one_problem(base.format(s="phased")).startswith(
        "plan.yaml:2: rollouts[0]: a phased rollout needs 'waves'"
    )
    assert one_problem(
        base.format(s="pilot") + "    waves:\n      - {cohorts: [x], start: 2027-01-01}\n"
    ) == (
        "plan.yaml:6: rollouts[0].waves: a pilot rollout needs at least two waves: the pilot (one cohort) "
        "first, then the rest"
    )
    assert one_problem(
        base.format(s="phased") + "    waves:\n      - {name: w1, start: 2027-01-01}\n"
    ).startswith("plan.yaml:6: rollouts[0].waves[0]: each wave of a phased rollout lists its 'cohorts'")
    assert one_problem(
        base.format(s="phased")
        + "    waves:\n      - {name: w1, cohorts: [x], start: 2027-01-01}\n"
        + "      - {name: w1, cohorts: [y], start: 2027-01-01}\n"
    ).startswith(
        "plan.yaml:7: rollouts[0].waves[1]: wave name 'w1' is used twice in this rollout (also line 6)"
    )
    assert one_problem(
        base.format(s="phased")
        + "    waves:\n      - {name: w1, cohorts: [x], start: 2027-01-01}\n"
        + "      - {name: w2, cohorts: [x], start: 2027-01-01}\n"
    ).startswith("plan.yaml:7: rollouts[0].waves[1]: cohort 'x' is already in wave 'w1'")
    assert one_problem(base.format(s="parallel") + "    start: 2027-01-01\n").startswith(
        "plan.yaml:2: rollouts[0]: missing field 'old_feature'"
    )
    assert (
        one_problem(base.format(s="parallel") + "    start: 2027-01-01\n    old_feature: a\n")
        == "plan.yaml:6: rollouts[0].old_feature: old_feature must differ from feature"
    )
    assert one_problem(base.format(s="parallel") + "    old_feature: b\n").startswith(
        "plan.yaml:2: rollouts[0]: missing 'start' for the switchover"
    )
    assert one_problem(
        base.format(s="phased") + "    cohorts: [x]\n    waves:\n      - {cohorts: [y], start: 2027-01-01}\n"
    ).startswith("plan.yaml:5: rollouts[0].cohorts: 'cohorts' belongs to each wave of a phased rollout")


def test_parallel_with_switchover_defaults_and_cohort_waves() -> None:
    plan = load_plan_text(
        textwrap.dedent(
            """\
            rollouts:
              - feature: search.v3
                owner: po
                strategy: parallel
                old_feature: search.v2
                waves:
                  - {name: early, cohorts: [beta], start: 2027-01-10}
                  - {name: rest, cohorts: [ga], start: 2027-02-01}
            """
        )
    )
    rollout = plan.rollouts[0]
    assert rollout.switchover is not None
    assert rollout.switchover.start == ts("2027-01-10T00:00:00Z")  # the earliest wave
    assert rollout.switchover.target == pytest.approx(0.95)
    assert rollout.switchover.window == "7d"
    assert [w.name for w in rollout.waves] == ["early", "rest"]


def test_cross_file_checks(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text(MINIMAL)
    second.write_text(MINIMAL.replace("payments-po", "other-po"))
    with pytest.raises(PlanError) as info:
        load_plans([first, second])
    assert info.value.problems == [
        f"{second}:2: rollouts: rollout name 'checkout' is used twice (also {first}:2); "
        "give one of them a distinct 'name'",
        f"{second}:2: owner: feature 'checkout' is owned by 'payments-po' in {first}:2; one product owner "
        "per feature",
    ]
    with pytest.raises(PlanError) as info:
        load_plans([tmp_path / "missing.yaml"])
    assert info.value.problems[0].startswith(f"{tmp_path / 'missing.yaml'}:1: cannot read the plan file")


def test_owners_section_is_checked() -> None:
    found = problems(
        MINIMAL
        + textwrap.dedent(
            """\
            owners:
              payments-po: {webhook_url: "ftp://x"}
              "bad owner": {}
              other: {team: t, email: x}
            """
        )
    )
    assert found == [
        "plan.yaml:7: owners.payments-po.webhook_url: 'ftp://x' is not an http(s) URL",
        "plan.yaml:8: owners.bad owner: 'bad owner' is not a valid owner name (must match "
        "^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$)",
        "plan.yaml:9: owners.other.email: unknown field 'email'; allowed here: team, webhook_url",
    ]


def test_cohort_names_are_kept_verbatim() -> None:
    plan = load_plan_text(MINIMAL + "    cohorts: ['site \"Lyon\" | a.b\\c (1)', 'Zürich {{ x }}', 42]\n")
    assert plan.rollouts[0].waves[0].cohorts == ('site "Lyon" | a.b\\c (1)', "Zürich {{ x }}", "42")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("3d", 259200), ("2w", 1209600), ("1d12h", 129600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


def test_duration_formatting() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(14 * 86400) == "2w"
    assert format_duration(10 * 86400) == "10d"
    assert humanize_duration(3 * 86400) == "3 days"
    assert humanize_duration(40) == "40 seconds"
    assert humanize_duration(3600) == "1 hour"
    for bad in ("", "3", "3 d", "d", "1.5h", "-1h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_satisfaction_floor_is_per_rollout_with_defaults() -> None:
    rollout = load_plan_text(MINIMAL + "    satisfaction: {csat: 75%}\n").rollouts[0]
    floor = rollout.satisfaction
    assert floor is not None
    assert floor.floors == (("csat", 0.75),)
    assert (floor.min_answers, floor.period, floor.for_s) == (30, "30d", 3600)
    both = load_plan_text(
        MINIMAL + "    satisfaction: {nps: -10, csat: 0.8, min_answers: 100, period: 90d, for: 2h}\n"
    ).rollouts[0]
    assert both.satisfaction is not None
    assert both.satisfaction.floors == (("nps", -10.0), ("csat", 0.8))
    assert both.satisfaction.min_answers == 100 and both.satisfaction.period == "90d"
    assert both.satisfaction.for_s == 7200
    assert load_plan_text(MINIMAL).rollouts[0].satisfaction is None
    example = {r.name: r for r in load_plans([EXAMPLE]).rollouts}
    assert example["one-click-checkout"].satisfaction is not None
