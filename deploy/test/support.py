"""What the deploy/ tests share: the repository's paths, kubectl and the rendered manifests, the
CRDs as JSON Schema, and a real control plane started from the built binary."""

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TEST = DEPLOY / "test"
# The two installs: the default (embedded store) and the etcd overlay.
VARIANTS = {"embedded": DEPLOY, "etcd": DEPLOY / "overlays" / "etcd"}
KUBERNETES_VERSION = "1.32.0"
# What the image runs as (deploy/Dockerfile's USER; the contract's proxy UID).
IMAGE_UID = 2102


def load_all(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@functools.cache
def kubectl():
    """kubectl (with its built-in kustomize), installed with apt-get when missing."""
    found = shutil.which("kubectl")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for step in (["update", "-qq"], ["install", "-y", "-qq", "kubectl"]):
            subprocess.run(["apt-get", *step], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        found = shutil.which("kubectl")
    if found is None:
        raise AssertionError(
            "kubectl is needed to render deploy/ (kubectl kustomize) and is not installed, nor could "
            "`apt-get install kubectl` install it (that needs root and a package source that has "
            "kubectl): install kubectl 1.27 or later (kustomize v5), e.g. from the Kubernetes "
            "project's package repository, then run the tests again")
    return found


@functools.cache
def rendered(variant):
    """`kubectl kustomize` of one install, as a list of documents."""
    out = subprocess.run([kubectl(), "kustomize", str(VARIANTS[variant])],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {VARIANTS[variant]} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]


def find(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


@functools.cache
def crds():
    """kind -> the CustomResourceDefinition, as the default install renders it."""
    return {d["spec"]["names"]["kind"]: d for d in rendered("embedded") if d["kind"] == "CustomResourceDefinition"}


def crd_schema(kind):
    (version,) = crds()[kind]["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def to_json_schema(node, closed=True):
    """An OpenAPI v3 (Kubernetes structural) schema as JSON Schema. The differences that
    matter: `nullable: true` is a `null` type there; the x-kubernetes-* extensions are not
    keywords (dropped); and the API server refuses fields a schema does not list (kubectl's
    default field validation, Strict), which JSON Schema does only with
    `additionalProperties: false`, so objects with properties are closed, except where
    x-kubernetes-preserve-unknown-fields keeps them open. `metadata` is left open: the API
    server checks it against ObjectMeta itself."""
    if isinstance(node, list):
        return [to_json_schema(n, closed) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub, closed) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_json_schema(value, closed)
        elif key in ("allOf", "anyOf", "oneOf"):
            # Inside a junctor, properties only restrict what the node already lists.
            out[key] = [to_json_schema(v, closed=False) for v in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    open_here = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if closed and node.get("type") == "object" and "properties" in node and not open_here:
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind):
    import jsonschema
    schema = to_json_schema(crd_schema(kind))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def binary():
    """The built `pilotfish` (PILOTFISH_BIN, else target/debug/pilotfish)."""
    path = Path(os.environ.get("PILOTFISH_BIN", REPO / "target" / "debug" / "pilotfish"))
    if not path.is_file():
        raise AssertionError(f"{path} not found: build it first (cargo build) or set PILOTFISH_BIN")
    return path


class ControlPlane:
    """A control plane on loopback (plaintext) with a fresh embedded store, from the built binary."""

    TOKEN = "deploy-test-admin-token"

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="pilotfish-deploy-test-")
        self.log = open(Path(self.dir.name) / "log", "w+")
        self.proc = subprocess.Popen(
            [str(binary()), "control-plane", "--data-dir", f"{self.dir.name}/data",
             "--listen", "127.0.0.1:0", "--admin-token", self.TOKEN],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self._port()}"

    def _port(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.log.seek(0)
            found = re.search(r"control plane listening listen=127\.0\.0\.1:(\d+)", self.log.read())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.log.seek(0)
        self.close()
        raise AssertionError(f"the control plane did not start:\n{self.log.read()}")

    def text(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read().decode()

    def get(self, path):
        return json.loads(self.text(path))

    def apply(self, doc):
        """POST /v1/resources with one document: (HTTP status, body)."""
        request = urllib.request.Request(
            self.url + "/v1/resources", data=json.dumps(doc).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.dir.cleanup()


def python_bin(name):
    """A console script installed beside this interpreter (the test venv's bin/)."""
    return Path(sys.executable).parent / name
