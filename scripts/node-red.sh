#!/usr/bin/env bash
# The Node-RED the example-flow tests run: `npm ci` from examples/node-red's lock, into a cached directory.
#
# Kept while the lock file and Node's major version hold, so only the first `make test` (about 2 min)
# downloads it. Node-RED 4.1.x runs on Node 18.5+; 5.x needs Node 22. Prints the path of red.js.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=examples/node-red
DIR="${NODE_RED_CACHE:-.cache/node-red}"
if ! command -v npm >/dev/null 2>&1; then
    echo "node-red: npm not found (scripts/system-deps.sh installs it)" >&2
    exit 3
fi
KEY="$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1) node $(node -p 'process.versions.node.split(".")[0]')"
STAMP="$DIR/.milo-node-red-installed"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" && -f "$DIR/node_modules/node-red/red.js" ]]; then
    echo "$DIR/node_modules/node-red/red.js"
    exit 0
fi

start=$(date +%s)
mkdir -p "$DIR"
cp "$SRC/package.json" "$SRC/package-lock.json" "$DIR/"
# No install scripts: nothing in this tree needs one (bcrypt falls back to bcryptjs).
npm ci --prefix "$DIR" --no-audit --no-fund --ignore-scripts --loglevel=error >&2
echo "$KEY" > "$STAMP"
echo "node-red: installed $DIR in $(( $(date +%s) - start )) s" >&2
echo "$DIR/node_modules/node-red/red.js"
