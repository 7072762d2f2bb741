#!/bin/sh
# The namespace the workers poll, once the server answers (idempotent).
set -eu
NAMESPACE=${DEFAULT_NAMESPACE:-default}
ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
attempt=0
until temporal operator cluster health --address "$ADDRESS"; do
  attempt=$((attempt + 1))
  [ $attempt -ge 12 ] && { echo "server at $ADDRESS not healthy"; exit 1; }
  sleep 5
done
temporal operator namespace describe -n "$NAMESPACE" --address "$ADDRESS" \
  || temporal operator namespace create -n "$NAMESPACE" --address "$ADDRESS"
