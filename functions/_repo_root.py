"""Puts the repository root on sys.path so that `import common` works however a function runs.

The stock `functions-framework --source functions/x.py` CLI adds only this folder to sys.path;
`python -m functions_framework` from the root, the runner and the tests add the root already.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
