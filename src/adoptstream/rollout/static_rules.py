"""The plan-independent rules (deploy/prometheus/rules/adoptstream.rules.yml): recording rules for
adoption, stickiness, engagement and satisfaction, the stickiness alert and the operational alerts for SREs.

The YAML below is the source; ``adoptstream rules static`` writes it with the runbook and dashboard base
URLs filled in, and the shipped file is that output with the defaults (a unit test keeps them equal).
"""

from __future__ import annotations

from adoptstream.rollout.rules import RenderOptions

# Alert name -> runbook file under docs/runbooks/ (the plan-generated alerts are in rules.RUNBOOKS).
STATIC_RUNBOOKS: dict[str, str] = {
    "AdoptionStickinessDropped": "adoption-stickiness-dropped.md",
    "AdoptstreamWorkerDown": "worker-down.md",
    "AdoptstreamWorkerNotScraped": "worker-down.md",
    "AdoptstreamWorkerNotReady": "worker-down.md",
    "AdoptstreamNoEventsAccepted": "no-events-accepted.md",
    "AdoptstreamProcessingStalled": "processing-stalled.md",
    "AdoptstreamConsumerLagGrowing": "consumer-lag-growing.md",
    "AdoptstreamDeadLettersRising": "dead-letters-rising.md",
    "AdoptstreamLabelOverflow": "label-overflow.md",
    "AdoptstreamPartitionStuck": "partition-stuck.md",
    "AdoptstreamBatchesFailing": "batches-failing.md",
    "AdoptstreamInputRecordsLost": "input-records-lost.md",
}

_TEMPLATE = r"""
groups:
  - name: adoptstream.recording
    rules:
      # Every contract series summed over workers (and their bookkeeping labels) is the true value.
      - record: adoptstream:active_users:sum
        expr: sum by (feature, window) (adoptstream_active_users)
      - record: adoptstream:exposed_users:sum
        expr: sum by (feature, cohort) (adoptstream_exposed_users)
      - record: adoptstream:adopted_users:sum
        expr: sum by (feature, cohort) (adoptstream_adopted_users)
      - record: adoptstream:adoption:ratio
        expr: |
          (
            sum by (feature, cohort) (adoptstream_adopted_users)
            or 0 * sum by (feature, cohort) (adoptstream_exposed_users)
          )
          /
          (sum by (feature, cohort) (adoptstream_exposed_users) > 0)
      - record: adoptstream:adoption_feature:ratio
        expr: |
          (
            sum by (feature) (adoptstream_adopted_users)
            or 0 * sum by (feature) (adoptstream_exposed_users)
          )
          /
          (sum by (feature) (adoptstream_exposed_users) > 0)
      # Stickiness: DAU/MAU, the share of the month's active users who were active in the last day.
      - record: adoptstream:stickiness:ratio
        expr: |
          sum by (feature) (adoptstream_active_users{window="1d"})
          /
          (sum by (feature) (adoptstream_active_users{window="30d"}) > 0)
      - record: adoptstream:stickiness_week_change:ratio
        expr: adoptstream:stickiness:ratio / (adoptstream:stickiness:ratio offset 1w > 0)
      - record: adoptstream:events:rate5m
        expr: sum by (outcome) (rate(adoptstream_events_total[5m]))
      - record: adoptstream:dead_letters:rate5m
        expr: sum by (reason) (rate(adoptstream_dead_letters_total[5m]))
      - record: adoptstream:consumer_lag:records
        expr: sum by (topic) (adoptstream_consumer_lag_records)

  # Contract v2 (section 3): engagement depth and satisfaction. Each family is summed over workers once
  # (the contract's rule), the seed KPIs are derived from those sums.
  - name: adoptstream.engagement
    rules:
      - record: adoptstream:active_days_users:sum
        expr: sum by (feature, period, days) (adoptstream_active_days_users)
      - record: adoptstream:lifecycle_users:sum
        expr: sum by (feature, period, state) (adoptstream_lifecycle_users)
      - record: adoptstream:signed_up_users:sum
        expr: sum by (period) (adoptstream_signed_up_users)
      - record: adoptstream:feedback_users:sum
        expr: sum by (feature, scale, period, score) (adoptstream_feedback_users)
      - record: adoptstream:feedback_answers:users
        expr: sum by (feature, scale, period) (adoptstream:feedback_users:sum)
      # Stickiness as a distribution: the share of the period's active users active on >= min_days dates.
      - record: adoptstream:active_days_at_least:ratio
        labels:
          period: 7d
          min_days: "2"
        expr: |
          sum by (feature, period) (adoptstream:active_days_users:sum{period="7d",days=~"[2-7]"})
          /
          (sum by (feature, period) (adoptstream:active_days_users:sum{period="7d"}) > 0)
      - record: adoptstream:active_days_at_least:ratio
        labels:
          period: 7d
          min_days: "4"
        expr: |
          sum by (feature, period) (adoptstream:active_days_users:sum{period="7d",days=~"[4-7]"})
          /
          (sum by (feature, period) (adoptstream:active_days_users:sum{period="7d"}) > 0)
      - record: adoptstream:active_days_at_least:ratio
        labels:
          period: 30d
          min_days: "4"
        expr: |
          sum by (feature, period) (
            adoptstream:active_days_users:sum{period="30d",days=~"[4-9]|[12][0-9]|30"}
          )
          /
          (sum by (feature, period) (adoptstream:active_days_users:sum{period="30d"}) > 0)
      - record: adoptstream:active_days_at_least:ratio
        labels:
          period: 30d
          min_days: "8"
        expr: |
          sum by (feature, period) (adoptstream:active_days_users:sum{period="30d",days=~"[89]|[12][0-9]|30"})
          /
          (sum by (feature, period) (adoptstream:active_days_users:sum{period="30d"}) > 0)
      - record: adoptstream:active_days_at_least:ratio
        labels:
          period: 30d
          min_days: "15"
        expr: |
          sum by (feature, period) (adoptstream:active_days_users:sum{period="30d",days=~"1[5-9]|2[0-9]|30"})
          /
          (sum by (feature, period) (adoptstream:active_days_users:sum{period="30d"}) > 0)
      # First-time users: `new` among the period's active users (new + returning + resurrecting).
      - record: adoptstream:first_time_users:ratio
        expr: |
          sum by (feature, period) (adoptstream:lifecycle_users:sum{state="new"})
          /
          (
            sum by (feature, period) (adoptstream:lifecycle_users:sum{state=~"new|returning|resurrecting"})
            > 0
          )
      # Adoption rate: users whose first use of anything is in the period / users who signed up in it
      # (period="30d" is the monthly adoption rate). It can exceed 1: earlier signups count when they start.
      - record: adoptstream:adoption_rate:ratio
        expr: |
          sum by (period) (adoptstream:lifecycle_users:sum{feature="*",state="new"})
          /
          (adoptstream:signed_up_users:sum > 0)
      # NPS: (promoters 9-10 - detractors 0-6) / all answers x 100, from -100 to 100.
      - record: adoptstream:nps:score
        expr: |
          100 * (
            sum by (feature, period) (adoptstream:feedback_users:sum{scale="nps",score=~"9|10"})
            - sum by (feature, period) (adoptstream:feedback_users:sum{scale="nps",score=~"[0-6]"})
          )
          / on(feature, period)
          (adoptstream:feedback_answers:users{scale="nps"} > 0)
      # CSAT: the share of answers 4-5 on the 1-5 scale.
      - record: adoptstream:csat:ratio
        expr: |
          sum by (feature, period) (adoptstream:feedback_users:sum{scale="csat",score=~"4|5"})
          / on(feature, period)
          (adoptstream:feedback_answers:users{scale="csat"} > 0)
      # CES: the mean score on the 1-7 scale (every score is exported, possibly 0).
      - record: adoptstream:ces:mean
        expr: |
          (
              1 * sum by (feature, period) (adoptstream:feedback_users:sum{scale="ces",score="1"})
            + 2 * sum by (feature, period) (adoptstream:feedback_users:sum{scale="ces",score="2"})
            + 3 * sum by (feature, period) (adoptstream:feedback_users:sum{scale="ces",score="3"})
            + 4 * sum by (feature, period) (adoptstream:feedback_users:sum{scale="ces",score="4"})
            + 5 * sum by (feature, period) (adoptstream:feedback_users:sum{scale="ces",score="5"})
            + 6 * sum by (feature, period) (adoptstream:feedback_users:sum{scale="ces",score="6"})
            + 7 * sum by (feature, period) (adoptstream:feedback_users:sum{scale="ces",score="7"})
          )
          / on(feature, period)
          (adoptstream:feedback_answers:users{scale="ces"} > 0)

  - name: adoptstream.adoption
    rules:
      # Owned features (a rollout plan names their owner) carry owner and team and go to the owner;
      # the others (no plan, or feature "*") go to the default product receiver.
      - alert: AdoptionStickinessDropped
        expr: |
          (
            (
              adoptstream:stickiness_week_change:ratio < 0.7
              and on(feature) adoptstream:active_users:sum{window="30d"} >= 100
            )
            * on(feature) group_left(owner, team) adoptstream:feature_owner:info
          )
          or
          (
            (
              adoptstream:stickiness_week_change:ratio < 0.7
              and on(feature) adoptstream:active_users:sum{window="30d"} >= 100
            )
            unless on(feature) adoptstream:feature_owner:info
          )
        for: 1h
        labels:
          severity: warning
          category: adoption
        annotations:
          summary: >-
            {{ $labels.feature }} stickiness (DAU/MAU) fell to {{ $value | humanizePercentage }} of its
            level a week ago
          description: >-
            {{ with printf "adoptstream:stickiness:ratio{feature=%q}" $labels.feature | query }}Stickiness
            of {{ $labels.feature }} is now {{ . | first | value | humanizePercentage }}{{ end }}{{ with
            printf "adoptstream:stickiness:ratio{feature=%q} offset 1w" $labels.feature | query }}, against
            {{ . | first | value | humanizePercentage }} a week ago{{ end }}: daily users come back less
            often ({{ with printf "adoptstream:active_users:sum{feature=%q,window=\"30d\"}" $labels.feature
            | query }}{{ . | first | value | humanize }}{{ end }} active users in 30 days). Look for a
            release, an outage or a competing feature in the last week. Owner:
            {{ with $labels.owner }}{{ . }}{{ else }}none (no rollout plan names this feature){{ end }}.
          runbook_url: "@RUNBOOK_BASE_URL@/adoption-stickiness-dropped.md"
          dashboard_url: >-
            @DASHBOARD_BASE_URL@/adoptstream-adoption?var-feature={{ $labels.feature | urlquery }}

  - name: adoptstream.operational
    rules:
      - alert: AdoptstreamWorkerDown
        expr: up{job="adoptstream"} == 0
        for: 2m
        labels:
          severity: critical
          category: operational
          team: sre
        annotations:
          summary: adoptstream worker {{ $labels.instance }} is down (scrape failing)
          description: >-
            Prometheus has failed to scrape the adoptstream worker at {{ $labels.instance }} for 2 minutes.
            While it is down the adoption numbers miss the users whose state lives on it, so adoption
            alerts are held back (inhibited) until it is back.
          runbook_url: "@RUNBOOK_BASE_URL@/worker-down.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamWorkerNotScraped
        expr: absent(up{job="adoptstream"})
        for: 5m
        labels:
          severity: critical
          category: operational
          team: sre
        annotations:
          summary: No adoptstream worker is scraped by Prometheus
          description: >-
            Prometheus has no target in the scrape job "adoptstream" for 5 minutes: service discovery
            or the scrape configuration lost the workers, so no adoption number is current (and the
            adoption alerts, which need those numbers, are silent).
          runbook_url: "@RUNBOOK_BASE_URL@/worker-down.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamWorkerNotReady
        expr: adoptstream_ready{job="adoptstream"} == 0
        for: 5m
        labels:
          severity: warning
          category: operational
          team: sre
        annotations:
          summary: adoptstream worker {{ $labels.instance }} has not been ready for 5 minutes
          description: >-
            The worker at {{ $labels.instance }} answers scrapes but does not serve exact numbers yet
            (adoptstream_ready is 0): it is restoring its state from the changelog or waiting for its
            partitions. Adoption numbers miss its users meanwhile, so adoption alerts are held back.
          runbook_url: "@RUNBOOK_BASE_URL@/worker-down.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamNoEventsAccepted
        expr: |
          sum(increase(adoptstream_events_total{outcome="accepted"}[30m])) == 0
          and on() count(up{job="adoptstream"} == 1) > 0
        for: 10m
        labels:
          severity: warning
          category: operational
          team: sre
        annotations:
          summary: adoptstream accepted no event in the last 30 minutes
          description: >-
            The workers are up but none accepted an event in 30 minutes ({{ with
            query "sum(rate(adoptstream_events_total[30m]))" }}{{ . | first | value | humanize }}{{ else
            }}0{{ end }} messages/s arrived in all). The apps stopped publishing, publish to another
            topic, or every event is rejected (see dead letters). Adoption alerts are held back meanwhile.
          runbook_url: "@RUNBOOK_BASE_URL@/no-events-accepted.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamProcessingStalled
        expr: |
          time() - adoptstream_last_processed_timestamp_seconds > 300
          and on(instance) sum by (instance) (adoptstream_consumer_lag_records) > 0
        for: 5m
        labels:
          severity: critical
          category: operational
          team: sre
        annotations:
          summary: >-
            adoptstream worker {{ $labels.instance }} processed nothing for {{ $value | humanizeDuration }}
            despite lag
          description: >-
            The worker at {{ $labels.instance }} last processed a batch {{ $value | humanizeDuration }} ago
            while its partitions have {{ with printf "sum(adoptstream_consumer_lag_records{instance=%q})"
            $labels.instance | query }}{{ . | first | value | humanize }}{{ end }} records waiting: it is
            stuck (state store, a poison batch, a lost partition assignment). Adoption alerts are held back.
          runbook_url: "@RUNBOOK_BASE_URL@/processing-stalled.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamConsumerLagGrowing
        expr: |
          sum by (topic) (adoptstream_consumer_lag_records) > 1000
          and sum by (topic) (deriv(adoptstream_consumer_lag_records[10m])) > 0
        for: 15m
        labels:
          severity: warning
          category: operational
          team: sre
        annotations:
          summary: >-
            adoptstream consumer lag on {{ $labels.topic }} is {{ $value | humanize }} records and growing
          description: >-
            The workers fall further behind on topic {{ $labels.topic }}: {{ $value | humanize }} records
            wait and the lag has grown for 15 minutes. Adoption numbers are late meanwhile (adoption alerts
            are held back). Add workers (partitions allowing) or find the slow stage.
          runbook_url: "@RUNBOOK_BASE_URL@/consumer-lag-growing.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamDeadLettersRising
        expr: |
          sum by (reason) (rate(adoptstream_dead_letters_total[15m])) > 0.05
          and on() (
            sum(rate(adoptstream_dead_letters_total[15m]))
            / sum(rate(adoptstream_events_total[15m])) > 0.01
          )
        for: 10m
        labels:
          severity: warning
          category: operational
          team: sre
        annotations:
          summary: >-
            adoptstream dead letters rising: {{ $value | humanize }}/s with reason {{ $labels.reason }}
          description: >-
            More than 1% of the messages go to the dead-letter topic, {{ $value | humanize }}/s of them with
            reason "{{ $labels.reason }}". An app publishes malformed events or its clock runs ahead. The
            messages are kept byte for byte in the .dlq topic: read a few to find the sender.
          runbook_url: "@RUNBOOK_BASE_URL@/dead-letters-rising.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamLabelOverflow
        expr: max by (label) (adoptstream_label_overflow_values) > 0
        for: 15m
        labels:
          severity: info
          category: operational
          team: sre
        annotations:
          summary: >-
            adoptstream folds {{ $value | humanize }} {{ $labels.label }} values into the overflow value
          description: >-
            More distinct values of label "{{ $labels.label }}" arrived than the configured cap, and
            {{ $value | humanize }} of them are now counted under the overflow value. A rollout whose
            cohorts are folded loses its numbers: raise the cap or fix the app sending unbounded values.
          runbook_url: "@RUNBOOK_BASE_URL@/label-overflow.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamPartitionStuck
        expr: max by (instance, topic) (adoptstream_stuck_partitions) > 0
        for: 5m
        labels:
          severity: critical
          category: operational
          team: sre
        annotations:
          summary: >-
            adoptstream worker {{ $labels.instance }} holds back {{ $value | humanize }} partition(s) of
            {{ $labels.topic }}
          description: >-
            For 5 minutes the worker at {{ $labels.instance }} could not read, apply or restore {{ $value |
            humanize }} partition(s) of {{ $labels.topic }}: a batch it cannot decode, a restore or local
            store failing (disk full?), or a topic that is not the one its state was built from. It retries
            them with backoff and skips nothing, so their users' numbers are frozen meanwhile; the others
            go on. The worker's /ready says which partition, at which offset, and why.
          runbook_url: "@RUNBOOK_BASE_URL@/partition-stuck.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamBatchesFailing
        expr: max by (instance, stage) (adoptstream_stage_failing_seconds) > 300
        labels:
          severity: critical
          category: operational
          team: sre
        annotations:
          summary: >-
            adoptstream {{ $labels.stage }} stage on {{ $labels.instance }} has failed every batch for
            {{ $value | humanizeDuration }}
          description: >-
            Every batch of the {{ $labels.stage }} stage on {{ $labels.instance }} has failed for {{ $value |
            humanizeDuration }}, with a Kafka error (the broker unreachable, produce requests timing out,
            authorization). The worker retries with backoff and answers /healthz, but processes nothing;
            adoptstream_batch_errors_total{kind} and the worker's log say what fails.
          runbook_url: "@RUNBOOK_BASE_URL@/batches-failing.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
      - alert: AdoptstreamInputRecordsLost
        expr: sum by (topic) (increase(adoptstream_input_records_lost_total[1h])) > 0
        labels:
          severity: critical
          category: operational
          team: sre
        annotations:
          summary: >-
            {{ $value | humanize }} records of {{ $labels.topic }} were deleted before adoptstream read them
          description: >-
            In the last hour the broker deleted about {{ $value | humanize }} records of {{ $labels.topic }}
            (retention, delete-records) that the workers had not read yet: they are counted nowhere, and
            the adoption numbers are short of them. The workers lagged more than the topic's retention.
          runbook_url: "@RUNBOOK_BASE_URL@/input-records-lost.md"
          dashboard_url: "@DASHBOARD_BASE_URL@/adoptstream-operations"
"""


def render_static_rules_text(options: RenderOptions | None = None) -> str:
    """The static rule file's text with the runbook and dashboard base URLs of ``options``."""
    options = options or RenderOptions()
    header = (
        "# Plan-independent adoptstream rules: recording rules (adoption, stickiness), operational alerts.\n"
        "# Written by `adoptstream rules static` (options: --runbook-base-url, --dashboard-base-url):\n"
        "# edit src/adoptstream/rollout/static_rules.py and write it again (docs/operations.md explains).\n"
    )
    body = _TEMPLATE.lstrip("\n")
    body = body.replace("@RUNBOOK_BASE_URL@", options.runbook_base_url.rstrip("/"))
    body = body.replace("@DASHBOARD_BASE_URL@", options.dashboard_base_url.rstrip("/"))
    return header + body
