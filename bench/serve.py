"""Serve one bench function with the runner's server and settings: common/serving.py
(uvicorn, the Flask function on the worker threads), default thread count, as
`local_runner.py serve` does.

python bench/serve.py ceiling|seed --port P
"""

from __future__ import annotations

import argparse
from pathlib import Path

import functions_framework

from common.serving import serve_asgi

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
    serve_asgi(app, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
