"""Applies an admission webhook's JSONPatch with the `jsonpatch` library (RFC 6902).

Usage: apply_json_patch.py OBJECT.json REVIEW.json -- prints OBJECT with the base64 patch of
REVIEW's response applied (OBJECT unchanged if the response has no patch), as JSON.
"""

import base64
import json
import sys

import jsonpatch


def main():
    with open(sys.argv[1]) as f:
        obj = json.load(f)
    with open(sys.argv[2]) as f:
        response = json.load(f)["response"]
    if "patch" in response:
        if response.get("patchType") != "JSONPatch":
            sys.exit(f"patchType is {response.get('patchType')!r}, not 'JSONPatch'")
        patch = jsonpatch.JsonPatch(json.loads(base64.b64decode(response["patch"])))
        obj = patch.apply(obj)
    json.dump(obj, sys.stdout)


if __name__ == "__main__":
    main()
