"""A task function importable by a worker (pickled by reference, so loading it needs
neither dill nor the test modules): what the worker has imported."""

from __future__ import annotations

import sys


def loaded_modules(_: object) -> list[str]:
    return sorted(sys.modules)
