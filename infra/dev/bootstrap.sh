#!/bin/sh
# `npm start`: works on a fresh clone with only the system Node and npm. Installs dependencies when
# they are missing or older than the lockfile, then hands over to the pinned Node 24.
set -e
cd "$(dirname "$0")/../.."
if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "loraplane: installing dependencies..."
  npm install --no-audit --no-fund
fi
exec node_modules/.bin/node infra/dev/start.ts "$@"
