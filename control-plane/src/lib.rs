//! The Pilotfish control plane (store, registry, HTTP API, push, CA): built in its own issue.
