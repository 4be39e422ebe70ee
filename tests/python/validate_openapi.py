"""Validates an OpenAPI document (stdin) with openapi-spec-validator; exits non-zero if invalid."""
import json
import sys

from openapi_spec_validator import validate

validate(json.load(sys.stdin))
print("valid", flush=True)
