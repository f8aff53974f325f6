#!/usr/bin/env bash
# The Node-RED the example flows are tested in: installed once with npm into .node-red-runtime/, kept while the version holds.
#
# Node-RED 4.1.x is the newest line that runs on Debian 12's Node.js 20 (5.x needs Node 22.9+). Only its
# core nodes are used, so nothing else is installed. Prints the path of its start script on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_RED_VERSION="${NODE_RED_VERSION:-4.1.8}"
DIR="${NODE_RED_DIR:-.node-red-runtime}"
if ! command -v npm >/dev/null; then
    echo "node-red: npm is not installed (apt install npm)" >&2
    exit 3
fi
KEY="node-red@$NODE_RED_VERSION node $(node --version)"
STAMP="$DIR/.milo-installed"
RED="$DIR/node_modules/node-red/red.js"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" && -f "$RED" ]]; then
    echo "$RED"
    exit 0
fi
start=$(date +%s)
rm -rf "$DIR"
mkdir -p "$DIR"
printf '{"name": "milo-node-red-runtime", "private": true}\n' > "$DIR/package.json"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error --omit=optional "node-red@$NODE_RED_VERSION" >&2
echo "$KEY" > "$STAMP"
echo "node-red: installed $KEY in $DIR in $(( $(date +%s) - start )) s" >&2
echo "$RED"
