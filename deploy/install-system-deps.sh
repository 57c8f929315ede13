#!/usr/bin/env bash
# Installs Debian's Prometheus and Alertmanager (with promtool and amtool) when missing.
# Needs root for apt-get; without it, says what is missing and lets the e2e tests skip.
set -u
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "note: ${need[*]} missing and not root: install them (apt-get install ${need[*]}) for the e2e tests" >&2
  exit 0
fi
echo "installing ${need[*]} from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# --no-install-recommends keeps the node exporter and friends off the machine; the services are
# not started by us (tests run their own on loopback), but Debian's postinst may start them:
# stop those so nothing listens on 0.0.0.0.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for svc in prometheus prometheus-alertmanager; do
  (service "$svc" stop || systemctl stop "$svc" || pkill -x "$svc") >/dev/null 2>&1 || true
done
command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null
