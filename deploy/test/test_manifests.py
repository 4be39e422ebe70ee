"""deploy/'s two installs, as `kubectl kustomize` renders them: valid Kubernetes 1.32 objects
(kubernetes-validate --strict), the names the other parts of issue 11 rely on, RBAC that grants
exactly what the control plane needs, a locked-down pod, and flags the binary has."""

import copy
import re
import subprocess
import sys
import tempfile
import unittest

import yaml

from support import DEPLOY, IMAGE_UID, KUBERNETES_VERSION, REPO, VARIANTS, binary, find, rendered

NAME = "pilotfish-control-plane"
NAMESPACE = "pilotfish"


def kubernetes_validate(docs):
    """kubernetes-validate --strict of the documents: (exit code, output)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump_all(docs, f)
        f.flush()
        out = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                              "-k", KUBERNETES_VERSION, f.name], capture_output=True, text=True)
    return out.returncode, out.stdout + out.stderr


def workload(variant):
    docs = rendered(variant)
    kind = {"embedded": "StatefulSet", "etcd": "Deployment"}[variant]
    return find(docs, kind, NAME)


def control_plane_container(variant):
    (container,) = workload(variant)["spec"]["template"]["spec"]["containers"]
    return container


class Valid(unittest.TestCase):
    def test_every_rendered_object_passes_kubernetes_validate_strict(self):
        for variant in VARIANTS:
            with self.subTest(variant=variant):
                docs = rendered(variant)
                code, output = kubernetes_validate(docs)
                self.assertEqual(code, 0, output)
                # A kind it has no schema for would be skipped with a warning: none may be.
                self.assertEqual(output.count(" passed for resource "), len(docs), output)

    def test_strict_validation_refuses_a_misspelt_field(self):
        docs = copy.deepcopy(rendered("embedded"))
        statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
        statefulset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
        code, output = kubernetes_validate(docs)
        self.assertNotEqual(code, 0, output)
        self.assertIn("runAsNonroot", output)


class Contract(unittest.TestCase):
    """The names in /work/k8s-contract.md that the injector, the sidecar and the control plane use."""

    def test_namespace_service_and_service_account(self):
        for variant in VARIANTS:
            docs = rendered(variant)
            find(docs, "Namespace", NAMESPACE)
            workloads = [d["kind"] for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
            self.assertEqual(workloads, [{"embedded": "StatefulSet", "etcd": "Deployment"}[variant]])
            self.assertEqual(find(docs, "ServiceAccount", NAME)["metadata"]["namespace"], NAMESPACE)
            service = find(docs, "Service", NAME)
            self.assertEqual(service["metadata"]["namespace"], NAMESPACE)
            (port,) = service["spec"]["ports"]
            self.assertEqual((port["port"], port["targetPort"]), (15100, "https"))
            pod = workload(variant)["spec"]["template"]
            self.assertEqual(pod["spec"]["serviceAccountName"], NAME)
            self.assertLessEqual(service["spec"]["selector"].items(), pod["metadata"]["labels"].items())

    def test_the_webhook(self):
        for variant, failure_policy in [("embedded", "Ignore"), ("etcd", "Fail")]:
            config = find(rendered(variant), "MutatingWebhookConfiguration", "pilotfish-injector")
            self.assertEqual(config["apiVersion"], "admissionregistration.k8s.io/v1")
            (hook,) = config["webhooks"]
            self.assertEqual(hook["clientConfig"]["service"],
                             {"name": NAME, "namespace": NAMESPACE, "path": "/inject", "port": 15100})
            self.assertNotIn("caBundle", hook["clientConfig"], "the control plane patches it in at start")
            self.assertEqual(hook["namespaceSelector"]["matchLabels"], {"pilotfish.io/inject": "enabled"})
            self.assertIn({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                           "values": [NAMESPACE, "kube-system"]}, hook["namespaceSelector"]["matchExpressions"])
            self.assertEqual(hook["objectSelector"]["matchExpressions"],
                             [{"key": "pilotfish.io/inject", "operator": "NotIn", "values": ["disabled"]}])
            self.assertEqual(hook["rules"], [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                              "resources": ["pods"], "scope": "Namespaced"}])
            self.assertEqual((hook["sideEffects"], hook["admissionReviewVersions"]), ("None", ["v1"]))
            self.assertEqual((hook["reinvocationPolicy"], hook["failurePolicy"]), ("IfNeeded", failure_policy))
            self.assertLessEqual(hook["timeoutSeconds"], 10)

    def test_the_image_is_the_crate_version(self):
        version = re.search(r'^\[workspace\.package\]\nversion = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
        for variant in VARIANTS:
            self.assertEqual(control_plane_container(variant)["image"], f"ghcr.io/pilotfish/pilotfish:{version[1]}")


# Exactly what the control plane may do: (apiGroup, resource, verbs, resourceNames).
GRANTS = {
    ("", "services", ("list", "watch"), ()),
    ("", "pods", ("list", "watch"), ()),
    ("", "namespaces", ("list", "watch"), ()),
    ("discovery.k8s.io", "endpointslices", ("list", "watch"), ()),
    ("authentication.k8s.io", "tokenreviews", ("create",), ()),
    ("", "configmaps", ("create",), ()),
    ("", "configmaps", ("get", "patch", "update"), ("pilotfish-ca",)),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", ("get", "patch", "update"), ("pilotfish-injector",)),
}


def grants(rules):
    return {(group, resource, tuple(sorted(rule["verbs"])), tuple(rule.get("resourceNames", ())))
            for rule in rules for group in rule["apiGroups"] for resource in rule["resources"]}


class Rbac(unittest.TestCase):
    def test_the_control_plane_gets_exactly_what_it_needs(self):
        for variant in VARIANTS:
            docs = rendered(variant)
            self.assertEqual([d["kind"] for d in docs if d["kind"] in ("Role", "RoleBinding")], [])
            role = find(docs, "ClusterRole", NAME)
            self.assertEqual(grants(role["rules"]), GRANTS)
            binding = find(docs, "ClusterRoleBinding", NAME)
            self.assertEqual(binding["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME})
            self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}])

    def test_the_comparison_sees_a_wider_grant(self):
        wider = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update", "patch"]}]
        self.assertNotEqual(grants(wider), grants([{**wider[0], "resourceNames": ["pilotfish-ca"]}]))


class Pod(unittest.TestCase):
    def test_locked_down(self):
        for variant in VARIANTS:
            with self.subTest(variant=variant):
                spec = workload(variant)["spec"]["template"]["spec"]
                pod = spec["securityContext"]
                self.assertTrue(pod["runAsNonRoot"])
                self.assertEqual((pod["runAsUser"], pod["runAsGroup"]), (IMAGE_UID, IMAGE_UID))
                self.assertEqual(pod["seccompProfile"], {"type": "RuntimeDefault"})
                container = control_plane_container(variant)
                self.assertEqual(container["securityContext"], {
                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]}})
                resources = container["resources"]
                self.assertEqual(set(resources["requests"]), {"cpu", "memory"})
                self.assertIn("memory", resources["limits"])

    def test_probes_on_the_api_port(self):
        for variant in VARIANTS:
            container = control_plane_container(variant)
            self.assertEqual(container["ports"], [{"name": "https", "containerPort": 15100, "protocol": "TCP"}])
            for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
                self.assertEqual(container[probe]["httpGet"], {"path": path, "port": "https", "scheme": "HTTPS"})

    def test_arguments_of_each_store(self):
        common = ["control-plane", "--kubernetes", "--listen=0.0.0.0:15100",
                  "--tls-san=pilotfish-control-plane.pilotfish.svc", "--webhook-config=pilotfish-injector"]
        embedded = workload("embedded")
        args = control_plane_container("embedded")["args"]
        self.assertLessEqual(set(common), set(args))
        self.assertIn("--data-dir=/var/lib/pilotfish", args)
        self.assertEqual(embedded["spec"]["replicas"], 1)
        self.assertEqual(control_plane_container("embedded")["volumeMounts"], [{"name": "data", "mountPath": "/var/lib/pilotfish"}])
        (claim,) = embedded["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["metadata"]["name"], "data")
        self.assertEqual(embedded["spec"]["template"]["spec"]["securityContext"]["fsGroup"], IMAGE_UID)

        etcd = workload("etcd")
        container = control_plane_container("etcd")
        self.assertLessEqual(set(common), set(container["args"]))
        self.assertEqual(etcd["spec"]["replicas"], 2)
        self.assertTrue(any(a.startswith("--store=etcd://") for a in container["args"]))
        self.assertFalse(any(a.startswith("--data-dir") for a in container["args"]))
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        self.assertEqual(secrets, {
            "PILOTFISH_ADMIN_TOKEN": {"name": NAME, "key": "admin-token"},
            "PILOTFISH_CA_SEAL_KEY": {"name": NAME, "key": "ca-seal-key"},
        }, "replicas share the admin token and the CA's seal key; neither is optional")

    def test_every_flag_is_one_the_binary_has(self):
        help_text = subprocess.run([str(binary()), "control-plane", "--help"], capture_output=True, text=True,
                                   check=True).stdout
        if "--kubernetes" not in help_text:
            self.skipTest(f"{binary()} predates `control-plane --kubernetes` (issue 11): rebuild it")
        for variant in VARIANTS:
            for arg in control_plane_container(variant)["args"][1:]:
                flag = arg.split("=", 1)[0]
                self.assertRegex(help_text, rf"\s{re.escape(flag)}\b", f"{variant}: {flag}")

    def test_every_environment_variable_is_one_the_binary_reads(self):
        help_text = subprocess.run([str(binary()), "control-plane", "--help"], capture_output=True, text=True,
                                   check=True).stdout
        for variant in VARIANTS:
            for env in control_plane_container(variant)["env"]:
                if env["name"] != "RUST_LOG":
                    self.assertIn(f"[env: {env['name']}", help_text, f"{variant}: {env['name']}")

    def test_the_kustomizations_list_files_that_exist(self):
        for kustomization in DEPLOY.rglob("kustomization.yaml"):
            for resource in yaml.safe_load(kustomization.read_text())["resources"]:
                self.assertTrue((kustomization.parent / resource).exists(), f"{kustomization}: {resource}")


if __name__ == "__main__":
    unittest.main()
