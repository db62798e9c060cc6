"""Serve one bench function with the runner's server and settings: functions-framework's
GunicornApplication (gthread), default thread count, same options as `local_runner.py serve`.

python bench/serve.py ceiling|seed --port P
"""

from __future__ import annotations

import argparse
from pathlib import Path

import functions_framework
from functions_framework._http.gunicorn import GunicornApplication

HERE = Path(__file__).resolve().parent
FUNCTIONS = {
    "ceiling": (HERE / "ceiling_function.py", "ceiling"),
    "seed": (HERE / "seed_send_function.py", "seed_send"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("function", choices=sorted(FUNCTIONS))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    source, target = FUNCTIONS[args.function]
    app = functions_framework.create_app(target, str(source), "http")
    # The runner passes graceful_timeout=60 and leaves threads at functions-framework's default.
    GunicornApplication(app, "127.0.0.1", args.port, False, graceful_timeout=60).run()


if __name__ == "__main__":
    main()
