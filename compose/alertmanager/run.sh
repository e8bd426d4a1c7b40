#!/bin/sh
# Alertmanager reads no environment: write the webhook URL into a copy of the config, then exec it.
set -eu
: "${ALERT_WEBHOOK_URL:?set ALERT_WEBHOOK_URL to the receiver of stockq alerts}"
sed "s|\${ALERT_WEBHOOK_URL}|${ALERT_WEBHOOK_URL}|" /etc/alertmanager/alertmanager.yml > /tmp/alertmanager.yml
exec alertmanager --config.file=/tmp/alertmanager.yml --storage.path=/alertmanager "$@"
