#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The kiosk screen's launcher (installed as /usr/libexec/kiosk-agent/kiosk-screen),
# run by cage: wait for the agent's local API token, then show the kiosk page.
# The token goes in the page's address, which the page drops from the address
# bar and keeps in memory only (docs/local-api.yaml).
set -eu

TOKEN_FILE=${KIOSK_TOKEN_FILE:-/run/kiosk-ui/token}
PORT=${KIOSK_LOCAL_API_PORT:-5846}
CHROMIUM=${KIOSK_CHROMIUM:-/usr/bin/chromium}

# The agent writes the token when its local API is up; until then a blank
# screen is all there is to show.
while [ ! -s "$TOKEN_FILE" ]; do
    sleep 1
done
token=$(cat "$TOKEN_FILE")

# The browser starts on a page that forwards to the kiosk page with the
# token, so the token never appears in a command line (ps shows those to
# every local user). The page lives in the unit's RuntimeDirectory (mode
# 0700, kiosk-ui's, in RAM); printf is a shell builtin, so no argv there either.
START_DIR=${RUNTIME_DIRECTORY:-${HOME:?}}
start="$START_DIR/start.html"
umask 077
printf '<!doctype html><meta http-equiv="refresh" content="0;url=http://127.0.0.1:%s/?token=%s">\n' \
    "$PORT" "$token" > "$start"

# --incognito: nothing of a citizen's visit is stored on disk.
# --ozone-platform=wayland: cage is a Wayland compositor.
exec "$CHROMIUM" \
    --kiosk --incognito --no-first-run --noerrdialogs --disable-infobars \
    --disable-session-crashed-bubble --disable-translate --disable-features=Translate \
    --disable-pinch --overscroll-history-navigation=0 \
    --disable-background-networking --disable-component-update --disable-sync \
    --check-for-update-interval=31536000 --password-store=basic \
    --ozone-platform=wayland \
    "file://$start"
