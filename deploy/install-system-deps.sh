#!/usr/bin/env bash
# Installs Debian's Prometheus and Alertmanager (with promtool and amtool) and Chromium (the rollout
# report's browser test) when missing.
# Needs root for apt-get; without it, says what is missing and lets the e2e tests skip.
set -u
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "note: ${need[*]} missing and not root: install them (apt-get install ${need[*]}) for the e2e tests" >&2
  exit 0
fi
echo "installing ${need[*]} from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# --no-install-recommends keeps the node exporter and friends off the machine. The services must not be
# started by the package scripts (tests run their own on loopback, nothing may listen on 0.0.0.0):
# a policy-rc.d that denies every start is put in place for the install when the machine has none, and
# Debian's units are stopped through the service manager only (never by process name: other people's
# Prometheus processes on this machine are not ours to end).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
fi
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
rc=$?
[ "$added_policy" -eq 1 ] && rm -f "$policy"
for svc in prometheus prometheus-alertmanager; do
  (systemctl disable --now "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
done
[ "$rc" -eq 0 ] && command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null
