"""Parse Prometheus text format from stdin with the Prometheus project's own parser; print the
samples as JSON. Fails (non-zero exit) if the text does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
json.dump(samples, sys.stdout)
