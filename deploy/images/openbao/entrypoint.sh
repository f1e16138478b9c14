#!/bin/sh
# Like openbao/openbao's docker-entrypoint.sh: a bao subcommand or flag as the command runs
# `bao <command>`; `server` owns /openbao/data and runs as the openbao user.
set -eu
case "${1:-}" in
  -*) set -- bao "$@" ;;
  server|status|operator|version|kv|secrets|auth|policy|read|write|login|token) set -- bao "$@" ;;
esac
if [ "${1:-}" = bao ] && [ "${2:-}" = server ] && [ "$(id -u)" = 0 ]; then
  chown -R openbao /openbao/data /openbao/logs
  exec setpriv --reuid=openbao --regid="$(id -g openbao)" --init-groups "$@"
fi
exec "$@"
