"""The CRDs of deploy/base/crds: structural, named as Kubernetes wants, the same shape as the
API's own types (the control plane's OpenAPI document, derived from api/src), and they accept
and refuse what the control plane accepts and refuses: the repository's examples, every-field
documents (valid.yaml) and one-mistake documents (invalid.yaml)."""

import copy
import glob
import unittest

import jsonschema

from support import REPO, TEST, ControlPlane, crd_schema, crd_validator, crds, load_all, to_json_schema

KINDS = {"BackendPolicy", "RateLimitPolicy", "AuthorizationPolicy", "Rollout"}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# What a structural schema may not set inside a junctor (Kubernetes' rule 3).
NOT_IN_JUNCTOR = {"type", "description", "default", "additionalProperties", "nullable"}

# Where a CRD says more than the API's OpenAPI document: rules of the kind's `validate()` in
# api/src that a schema can express. Anything else a CRD adds or lacks is drift.
STRICTER = {
    ("BackendPolicy", "spec.targetRef.kind"): "validate(): a BackendPolicy attaches to a Service",
    ("RateLimitPolicy", "spec.targetRef.kind"): "validate(): a Service or an HTTPRoute",
    ("RateLimitPolicy", "spec"): "validate(): at least one of perSecond, perMinute, perHour",
    ("RateLimitPolicy", "spec.key"): "validate(): exactly one of header or peer",
    ("AuthorizationPolicy", "spec.targetRef.kind"): "validate(): attaches to a Service",
    ("AuthorizationPolicy", "spec.rules[].from[].identity"): "IdentityPattern::try_from",
    ("AuthorizationPolicy", "spec.rules[].to[]"): "validate(): at least one of paths, methods, ports",
    ("AuthorizationPolicy", "spec.rules[].to[].paths[]"): "PathPattern::try_from",
    ("AuthorizationPolicy", "spec.rules[].to[].methods[]"): "validate(): route::http_method",
    ("Rollout", "spec.steps"): "validate(): at least one step",
    ("Rollout", "spec.steps[]"): "validate(): exactly one of setWeight or pause",
}


def structural_problems(node, path, outside=None):
    """Why `node` is not a structural schema (Kubernetes' rules), as a list of messages.
    `outside`: inside a junctor, the node the junctor belongs to, which must list every field."""
    problems = []
    in_junctor = outside is not None
    if in_junctor:
        for key in NOT_IN_JUNCTOR & node.keys():
            problems.append(f"{path}: `{key}` inside a junctor")
    elif "type" not in node and not node.get("x-kubernetes-int-or-string") \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: an array without items")
    if "default" in node:
        try:
            jsonschema.validate(node["default"], to_json_schema(node))
        except jsonschema.ValidationError as e:
            problems.append(f"{path}: default {node['default']!r} is invalid: {e.message}")
    children = [(f"{path}.{name}", sub, name) for name, sub in node.get("properties", {}).items()]
    if "items" in node:
        children.append((f"{path}[]", node["items"], None))
    for child_path, sub, name in children:
        if not in_junctor:
            problems += structural_problems(sub, child_path)
            continue
        beside = outside.get("properties", {}).get(name) if name else outside.get("items")
        if beside is None:
            problems.append(f"{child_path}: in a junctor but not beside it")
        else:
            problems += structural_problems(sub, child_path, beside)
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    for junctor in JUNCTORS:
        branches = node.get(junctor, [])
        for i, branch in enumerate(branches if isinstance(branches, list) else [branches]):
            problems += structural_problems(branch, f"{path}.{junctor}[{i}]", outside or node)
    return problems


class Structural(unittest.TestCase):
    def test_the_crds_are_our_four_kinds_named_as_kubernetes_wants(self):
        self.assertEqual(set(crds()), KINDS, "HTTPRoute comes from the Gateway API's CRDs, not ours")
        for kind, crd in crds().items():
            spec = crd["spec"]
            self.assertEqual(crd["metadata"]["name"], f"{spec['names']['plural']}.{spec['group']}", kind)
            self.assertEqual((spec["group"], spec["scope"]), ("pilotfish.io", "Namespaced"), kind)
            self.assertEqual(spec["names"]["singular"], kind.lower(), kind)
            (version,) = spec["versions"]
            self.assertEqual((version["name"], version["served"], version["storage"]), ("v1alpha1", True, True))

    def test_every_schema_is_structural(self):
        for kind in KINDS:
            schema = crd_schema(kind)
            self.assertEqual(structural_problems(schema, kind), [], kind)
            # Only name and generateName of metadata may be restricted: ours are not.
            self.assertEqual(schema["properties"]["metadata"], {"type": "object"}, kind)
            self.assertIn("spec", schema["required"], kind)

    def test_the_structural_check_finds_each_kind_of_violation(self):
        bad = {
            "type": "object",
            "properties": {
                "untyped": {"description": "no type"},
                "both": {"type": "object", "properties": {"a": {"type": "string"}},
                         "additionalProperties": {"type": "string"}},
                "list": {"type": "array"},
                "defaulted": {"type": "integer", "minimum": 1, "default": 0},
                "x": {"type": "string"},
            },
            "oneOf": [{"type": "object"}, {"properties": {"y": {"enum": [1]}}}],
        }
        problems = "\n".join(structural_problems(bad, "t"))
        for expected in ["t.untyped: no type", "t.both: properties and additionalProperties",
                         "t.list: an array without items", "t.defaulted: default 0 is invalid",
                         "t.oneOf[0]: `type` inside a junctor", "t.oneOf[1].y: in a junctor but not beside it"]:
            self.assertIn(expected, problems)


def resolve(components, node):
    """An OpenAPI node with its $ref followed and `oneOf: [null, X]` (an Option) unwrapped to X."""
    node = dict(node)
    one_of = node.pop("oneOf", None)
    if one_of is not None:
        rest = [b for b in one_of if b != {"type": "null"}]
        if len(rest) != 1:
            raise AssertionError(f"unexpected oneOf {one_of}")
        node = {**resolve(components, rest[0]), **node}
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**resolve(components, components[ref.rsplit("/", 1)[1]]), **node}
    if isinstance(node.get("type"), list):
        (node["type"],) = [t for t in node["type"] if t != "null"]
    return node


def drift(kind, components, crd, api, path="spec"):
    """Where a CRD node and the API's schema of the same field differ, as messages."""
    api = resolve(components, api)
    where = f"{kind} {path}"
    stricter = (kind, path) in STRICTER
    out = []
    if crd.get("type") != api.get("type"):
        out.append(f"{where}: type {crd.get('type')} != {api.get('type')}")
    if "properties" in api or "properties" in crd:
        crd_props, api_props = set(crd.get("properties", {})), set(api.get("properties", {}))
        if crd_props != api_props:
            out.append(f"{where}: fields {sorted(crd_props ^ api_props)} are in only one of the two")
        for name in crd_props & api_props:
            out += drift(kind, components, crd["properties"][name], api["properties"][name], f"{path}.{name}")
    if set(crd.get("required", [])) != set(api.get("required", [])):
        out.append(f"{where}: required {crd.get('required')} != {api.get('required')}")
    for key in ("enum", "minimum", "maximum", "maxItems", "pattern"):
        if key in api and crd.get(key) != api[key] and not (stricter and key == "pattern"):
            out.append(f"{where}: {key} {crd.get(key)!r} != {api[key]!r}")
        if key in crd and key not in api and not stricter:
            out.append(f"{where}: {key} {crd[key]!r} is not in the API's schema (add it to STRICTER with why)")
    if stricter and "pattern" in api and "enum" in crd:
        out += [f"{where}: {v!r} does not match {api['pattern']}"
                for v in crd["enum"] if not jsonschema.Draft202012Validator({"pattern": api["pattern"]}).is_valid(v)]
    for key in JUNCTORS + ("minItems",):
        if key in crd and not stricter:
            out.append(f"{where}: {key} is not in the API's schema (add it to STRICTER with why)")
    if crd.get("type") != "object" and crd.get("default") != api.get("default"):
        out.append(f"{where}: default {crd.get('default')!r} != {api.get('default')!r}")
    if "items" in api or "items" in crd:
        out += drift(kind, components, crd.get("items", {}), api.get("items", {}), f"{path}[]")
    return out


def split(docs):
    """(kind, name, document) of each document of a kind we have a CRD for."""
    return [(d["kind"], d["metadata"]["name"], d) for d in docs if d.get("kind") in KINDS]


class AgainstTheControlPlane(unittest.TestCase):
    """The CRDs beside the real API: its OpenAPI document, and what it accepts."""

    @classmethod
    def setUpClass(cls):
        cls.cp = ControlPlane()
        openapi = cls.cp.get("/v1/openapi.json")
        cls.components = openapi["components"]["schemas"]
        # The kinds the API has, and each one's spec schema.
        cls.api_specs = {}
        for branch in cls.components["Resource"]["oneOf"]:
            (kind,) = branch["properties"]["kind"]["enum"]
            cls.api_specs[kind] = branch["properties"]["spec"]

    @classmethod
    def tearDownClass(cls):
        cls.cp.close()

    def test_each_crd_has_the_fields_types_enums_ranges_and_defaults_of_the_api_type(self):
        checked = KINDS & set(self.api_specs)
        self.assertEqual(KINDS, checked)
        for kind in checked:
            problems = drift(kind, self.components, crd_schema(kind)["properties"]["spec"], self.api_specs[kind])
            self.assertEqual(problems, [], kind)

    def test_the_drift_check_finds_a_changed_crd(self):
        kind = "BackendPolicy"
        crd = copy.deepcopy(crd_schema(kind)["properties"]["spec"])
        crd["properties"]["circuitBreaker"]["properties"]["maxEjectionPercent"]["maximum"] = 99
        crd["properties"]["limits"]["properties"]["maxQueue"] = {"type": "integer"}
        crd["properties"]["loadBalancer"]["enum"].append("random")
        crd["properties"]["retry"]["properties"]["maxBackoff"]["default"] = "1s"
        problems = "\n".join(drift(kind, self.components, crd, self.api_specs[kind]))
        for expected in ["maxEjectionPercent: maximum 99 != 100", "fields ['maxQueue']",
                         "loadBalancer: enum", "maxBackoff: default '1s' != '250ms'"]:
            self.assertIn(expected, problems)

    def check_accepted(self, kind, name, doc):
        errors = [e.message for e in crd_validator(kind).iter_errors(doc)]
        self.assertEqual(errors, [], f"{kind} {name}: the CRD refuses it")
        if kind in self.api_specs:
            status, body = self.cp.apply(doc)
            self.assertEqual(status, 200, f"{kind} {name}: the control plane refuses it: {body}")

    def check_refused(self, kind, name, doc):
        self.assertFalse(crd_validator(kind).is_valid(doc), f"{kind} {name}: the CRD accepts it")
        if kind in self.api_specs:
            status, body = self.cp.apply(doc)
            self.assertEqual(status, 400, f"{kind} {name}: the control plane answered {status}: {body}")

    def check_each(self, docs, check, where, kinds=KINDS):
        """`check` on each document of a CRD kind in `docs`, which must have each of `kinds`."""
        docs = split(docs)
        self.assertEqual({kind for kind, _, _ in docs}, kinds, f"every kind has a document in {where}")
        for kind, name, doc in docs:
            with self.subTest(kind=kind, name=name):
                check(kind, name, doc)

    def test_the_examples_are_accepted(self):
        examples = [doc for path in sorted(glob.glob(str(REPO / "examples" / "*.yaml"))) for doc in load_all(path)]
        # The examples are what the control plane and the sidecar accept too (api's tests parse
        # them).
        self.check_each(examples, self.check_accepted, "examples/")

    def test_documents_with_every_field_are_accepted(self):
        self.check_each(load_all(TEST / "valid.yaml"), self.check_accepted, "valid.yaml")

    def test_documents_with_a_mistake_are_refused(self):
        self.check_each(load_all(TEST / "invalid.yaml"), self.check_refused, "invalid.yaml")


if __name__ == "__main__":
    unittest.main()
