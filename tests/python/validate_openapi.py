"""Validates an OpenAPI document (stdin) with openapi-spec-validator; exits non-zero if invalid.

With `SCHEMA FILE`, also validates each JSON line of FILE against the document's
`components/schemas/SCHEMA` (e.g. the push stream's lines against `PushLine`).
"""
import json
import sys

import jsonschema
from openapi_spec_validator import validate

doc = json.load(sys.stdin)
validate(doc)
if len(sys.argv) == 3:
    name, path = sys.argv[1], sys.argv[2]
    # The document as the root, so the schema's `#/components/...` references resolve.
    schema = dict(doc, **{"$ref": f"#/components/schemas/{name}"})
    validator = jsonschema.Draft202012Validator(schema)
    with open(path) as lines:
        for line in filter(str.strip, lines):
            validator.validate(json.loads(line))
print("valid", flush=True)
