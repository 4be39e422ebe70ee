"""deploy/grafana/pilotfish.json: a dashboard Grafana can import (uid, a data source variable,
panels laid out on the grid with PromQL targets), whose queries name only metrics and labels
that the sidecar and the control plane export (read from their source)."""

import json
import re
import unittest

from support import DEPLOY, REPO, ControlPlane

DASHBOARD = DEPLOY / "grafana" / "pilotfish.json"
SOURCES = [REPO / "sidecar" / "src", REPO / "control-plane" / "src"]
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
PROMQL_WORDS = {"by", "without", "bool", "on", "ignoring", "group_left", "group_right", "offset", "and", "or", "unless"}


def exported_families():
    """Metric family -> its label names, from the Rust source: the prometheus crate's
    `Opts::new("name", ...), &["label", ...]`, and the control plane's hand-written text format
    (`name{label="..."}`)."""
    families = {}
    for source in SOURCES:
        for path in source.rglob("*.rs"):
            text = path.read_text()
            for found in re.finditer(r'"(pilotfish_[a-z0-9_]+)"', text):
                name = found[1]
                # The statement or call the name is in: up to its end.
                rest = text[found.end():found.end() + 600]
                call = re.split(r"\)\s*;|\bfamily\(|\.expect\(", rest, maxsplit=1)[0]
                labels = set()
                vec = re.search(r"&\[([^\]]*)\]", call)
                if vec:
                    labels |= set(re.findall(r'"(\w+)"', vec[1]))
                labels |= set(re.findall(r'\{\{(\w+)=', call))
                families.setdefault(name, set()).update(labels)
    return families


def histogram_series(families, source_text_names):
    """name_bucket/_sum/_count of each family created as a histogram."""
    series = {}
    for name in source_text_names:
        for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
            series[name + suffix] = families[name] | extra
    return series


def histograms():
    names = set()
    for source in SOURCES:
        for path in source.rglob("*.rs"):
            names |= set(re.findall(r'HistogramOpts::new\(\s*"(pilotfish_[a-z0-9_]+)"', path.read_text()))
    return names


def series_labels():
    """Every series name a query may use -> the labels it carries."""
    families = exported_families()
    return {**families, **histogram_series(families, histograms())}


def query_problems(expr, known):
    """Why a PromQL expression names something the source does not export, as messages."""
    found = []
    text = re.sub(r'"[^"]*"', '""', expr)
    groups = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text)
    text = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    used = set()
    for selector in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?", text):
        name, matchers, call = selector.groups()
        if (call and not matchers) or name in PROMQL_WORDS:
            continue  # a function or an aggregation, or a keyword
        if name not in known:
            found.append(f"{name}: no such metric in the source")
            continue
        used.add(name)
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or ""):
            if label not in known[name] | TARGET_LABELS:
                found.append(f"{name}{{{label}}}: no such label")
    if not used:
        found.append("names no pilotfish metric")
    allowed = set().union(TARGET_LABELS, *(known[n] for n in used))
    for group in groups:
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in allowed:
                found.append(f"by ({label}): no metric of the query has it")
    return found


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dashboard = json.loads(DASHBOARD.read_text())
        cls.panels = [p for p in cls.dashboard["panels"] if p["type"] != "row"]
        cls.known = series_labels()

    def test_an_importable_dashboard(self):
        d = self.dashboard
        self.assertRegex(d["uid"], r"^[a-zA-Z0-9_-]{1,40}$")
        self.assertTrue(d["title"])
        self.assertIsInstance(d["schemaVersion"], int)
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual((variables["datasource"]["type"], variables["datasource"]["query"]), ("datasource", "prometheus"))
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        for panel in self.panels:
            with self.subTest(panel=panel["title"]):
                grid = panel["gridPos"]
                self.assertLessEqual(grid["x"] + grid["w"], 24)
                self.assertGreater(grid["h"], 0)
                self.assertEqual(panel["datasource"], {"type": "prometheus", "uid": "${datasource}"})
                self.assertTrue(panel["targets"])
                refs = [t["refId"] for t in panel["targets"]]
                self.assertEqual(len(refs), len(set(refs)))

    def test_panels_do_not_overlap(self):
        cells = {}
        for panel in self.dashboard["panels"]:
            g = panel["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, f"{panel['title']} overlaps {cells.get((x, y))}")
                    cells[(x, y)] = panel["title"]

    def test_it_covers_what_operators_watch(self):
        exprs = " ".join(t["expr"] for p in self.panels for t in p["targets"])
        for family in ["pilotfish_requests_total", "pilotfish_request_duration_seconds_bucket", "pilotfish_circuit_state",
                       "pilotfish_ratelimited_total", "pilotfish_open_connections", "pilotfish_cp_current_proxies",
                       "pilotfish_cp_connected_proxies", "pilotfish_ca_root_expiry_timestamp_seconds",
                       "pilotfish_identity_cert_expiry_timestamp_seconds"]:
            self.assertIn(family, exprs)
        self.assertIn("histogram_quantile(0.99", exprs)

    def test_every_query_names_metrics_and_labels_the_source_exports(self):
        self.assertIn("pilotfish_requests_total", self.known, "reading the source found the families")
        self.assertEqual(self.known["pilotfish_requests_total"], {"direction", "service", "endpoint", "code"})
        self.assertEqual(self.known["pilotfish_ca_root_expiry_timestamp_seconds"], {"root"})
        for panel in self.panels:
            for target in panel["targets"]:
                with self.subTest(panel=panel["title"], expr=target["expr"]):
                    self.assertEqual(query_problems(target["expr"], self.known), [])
        for variable in self.dashboard["templating"]["list"]:
            if variable["type"] == "query":
                metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()
                self.assertIn(label, self.known[metric])

    def test_the_control_plane_serves_every_family_the_dashboard_reads_from_it(self):
        # Its families are written by hand into the text format: read them from a running one.
        used = {name for p in self.panels for t in p["targets"]
                for name in re.findall(r"\b(pilotfish_(?:cp|ca)_[a-z0-9_]+)", t["expr"])}
        self.assertGreater(len(used), 5)
        cp = ControlPlane()
        try:
            served = set(re.findall(r"^# TYPE (\S+) ", cp.text("/metrics"), re.M))
        finally:
            cp.close()
        self.assertEqual(used - served, set())

    def test_the_query_check_finds_made_up_names(self):
        cases = {
            'sum(rate(pilotfish_request_total[5m]))': "pilotfish_request_total: no such metric",
            'sum by (route) (rate(pilotfish_requests_total[5m]))': "by (route): no metric of the query has it",
            'pilotfish_circuit_state{state="open"}': "pilotfish_circuit_state{state}: no such label",
            'sum(rate(http_requests_total[5m]))': "http_requests_total: no such metric",
        }
        for expr, expected in cases.items():
            self.assertIn(expected, "\n".join(query_problems(expr, self.known)), expr)


if __name__ == "__main__":
    unittest.main()
