"""Runs deploy/'s tests (test_*.py beside this file): `python deploy/test/run.py`, with the
Python of tests/python/requirements.txt (scripts/test.sh's venv) and the built binary
(target/debug/pilotfish, or PILOTFISH_BIN)."""

import sys
import unittest
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))
result = unittest.TextTestRunner(verbosity=1).run(unittest.defaultTestLoader.discover(str(here)))
failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
print(f"deploy: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed, {len(result.skipped)} skipped")
sys.exit(0 if result.wasSuccessful() else 1)
