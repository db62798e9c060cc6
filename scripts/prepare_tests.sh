#!/usr/bin/env bash
# Everything the test suite needs on a fresh machine: the test dependencies, a running
# RabbitMQ and Debian's chromium; then the lint. The README's test command runs this, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# RabbitMQ: the tests use the real broker (RABBITMQ_TEST_URL, default on 127.0.0.1:5672).
if ! "$PYTHON" scripts/wait_for_broker.py --timeout 2 >/dev/null 2>&1; then
    echo "RabbitMQ is not answering: starting it (rabbitmq-server -detached)" >&2
    rabbitmq-server -detached || true
    "$PYTHON" scripts/wait_for_broker.py --timeout 90
fi

# Chromium for the browser tests (Debian's package; no browser download).
if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-liberation >/dev/null
fi

"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
