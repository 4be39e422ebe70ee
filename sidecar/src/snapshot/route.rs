//! Route tables: a service's `HTTPRoute` rules compiled, when config arrives, into matchers in
//! Gateway API precedence order. A request walks the ordered matchers and takes the first rule
//! that matches; nothing here parses a regex or reads config per request.
//!
//! Precedence (Gateway API, with regular expressions placed where the spec leaves it to us):
//! exact path, then regular expression (longer pattern first), then path prefix (longer first);
//! then a method match; then more header matches; then more query matches; then the route's
//! `namespace/name`, the rule's position and the match's position. Regular expressions must
//! match the whole path (as in Envoy).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use pilotfish_api::route::{
    Filter, HeaderModifier, HttpRouteSpec, PathMatchType, PathModifier, RouteRule, ValueMatchType,
};
use regex::Regex;

use crate::resilience::ratelimit::policy::RateLimit;
use crate::telemetry::edges::{RouteId, NO_ROUTE};

/// A compiled rule: where matching requests go and how they are treated.
pub struct Rule {
    /// `namespace/name` of the HTTPRoute (empty for a service's default route).
    pub route: Arc<str>,
    /// The HTTPRoute's [`RouteId`], by which the telemetry edges of its requests are found.
    pub route_id: RouteId,
    /// Service keys (`name.namespace`) with weights; never empty, total weight above zero.
    pub backends: Vec<(Arc<str>, u32)>,
    total_weight: u32,
    pub request_timeout: Option<Duration>,
    pub try_timeout: Option<Duration>,
    pub retry: Option<RetryRule>,
    pub request_headers: Option<HeaderMods>,
    pub response_headers: Option<HeaderMods>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    /// A `RateLimitPolicy` attached to this rule's HTTPRoute.
    pub rate_limit: Option<Arc<RateLimit>>,
}

pub struct RetryRule {
    /// Retries after the first attempt.
    pub attempts: u32,
    pub backoff: Option<Duration>,
    pub codes: Vec<u16>,
}

#[derive(Default)]
pub struct HeaderMods {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    pub status: http::StatusCode,
}

pub struct Rewrite {
    pub hostname: Option<HeaderValue>,
    pub path: Option<PathModifier>,
}

/// A service's rules, and the matchers that select them in precedence order.
pub struct RouteTable {
    /// In precedence order.
    matchers: Vec<Matcher>,
    rules: Vec<Arc<Rule>>,
    needs_query: bool,
    /// Positions in `matchers` of the exact and prefix matchers whose path starts with a given
    /// first segment (`/api/users` → `api`): only those can match a path with that segment.
    by_segment: HashMap<String, Vec<u32>>,
    /// Positions of the matchers any path may match (regexes, the `/` prefix).
    anywhere: Vec<u32>,
}

struct Matcher {
    path: PathMatcher,
    method: Option<Method>,
    headers: Vec<(HeaderName, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
    rule: usize,
}

enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

/// The rule a request matched, and the path prefix that matched (for `ReplacePrefixMatch`).
pub struct Selected<'a> {
    pub rule: &'a Arc<Rule>,
    pub prefix: Option<&'a str>,
}

/// One HTTPRoute's rules for a service, before ordering.
pub struct RouteSource<'a> {
    pub name: Arc<str>,
    pub id: RouteId,
    pub spec: &'a HttpRouteSpec,
    pub rate_limit: Option<Arc<RateLimit>>,
}

impl RouteTable {
    /// The table for a service with no HTTPRoute: every request to the service itself.
    pub fn default_for(service: Arc<str>) -> Self {
        let rule = Rule::to_backends("".into(), NO_ROUTE, vec![(service, 1)]);
        let matcher = Matcher {
            path: PathMatcher::Prefix("/".into()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
            rule: 0,
        };
        Self::index(vec![matcher], vec![Arc::new(rule)])
    }

    /// Compiles the routes attached to `service` (key `name.namespace`; `namespace` resolves
    /// backend names without one). Specs were validated by `api`, so regexes compile.
    pub fn compile(service: &Arc<str>, namespace: &str, sources: &[RouteSource<'_>]) -> Self {
        let mut ranked = Vec::new();
        let mut rules = Vec::new();
        for source in sources {
            for (rule_index, rule) in source.spec.rules.iter().enumerate() {
                let id = rules.len();
                rules.push(Arc::new(compile_rule(service, namespace, source, rule)));
                let matches =
                    if rule.matches.is_empty() { vec![Default::default()] } else { rule.matches.clone() };
                for (match_index, m) in matches.iter().enumerate() {
                    let matcher = compile_match(m, id);
                    let rank = rank(&matcher, &source.name, rule_index, match_index);
                    ranked.push((rank, matcher));
                }
            }
        }
        ranked.sort_by(|a, b| a.0.cmp(&b.0));
        let matchers: Vec<Matcher> = ranked.into_iter().map(|(_, m)| m).collect();
        Self::index(matchers, rules)
    }

    fn index(matchers: Vec<Matcher>, rules: Vec<Arc<Rule>>) -> Self {
        let needs_query = matchers.iter().any(|m| !m.query.is_empty());
        let mut by_segment: HashMap<String, Vec<u32>> = HashMap::new();
        let mut anywhere = Vec::new();
        for (i, m) in matchers.iter().enumerate() {
            let segment = match &m.path {
                PathMatcher::Exact(p) => Some(first_segment(p)),
                PathMatcher::Prefix(p) if !p.trim_end_matches('/').is_empty() => Some(first_segment(p)),
                _ => None,
            };
            match segment {
                Some(seg) => by_segment.entry(seg.to_owned()).or_default().push(i as u32),
                None => anywhere.push(i as u32),
            }
        }
        Self { matchers, rules, needs_query, by_segment, anywhere }
    }

    /// The rate limits attached to this table's rules, with their route names.
    pub fn limiters(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<RateLimit>)> {
        self.rules.iter().filter_map(|r| Some((&r.route, r.rate_limit.as_ref()?)))
    }

    /// The first rule, in precedence order, whose match accepts the request.
    pub fn select(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Selected<'_>> {
        let params: Vec<(&str, &str)> = match (self.needs_query, query) {
            (true, Some(q)) => q.split('&').map(|kv| kv.split_once('=').unwrap_or((kv, ""))).collect(),
            _ => Vec::new(),
        };
        // Walk the two candidate lists merged in precedence order.
        let specific = self.by_segment.get(first_segment(path)).map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (specific.iter().peekable(), self.anywhere.iter().peekable());
        let m = std::iter::from_fn(|| match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x < y => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => None,
        })
        .map(|i| &self.matchers[*i as usize])
        .find(|m| m.accepts(method, path, &params, headers))?;
        Some(Selected {
            rule: &self.rules[m.rule],
            prefix: match &m.path {
                PathMatcher::Prefix(p) => Some(p.as_str()),
                _ => None,
            },
        })
    }
}

impl Matcher {
    fn accepts(&self, method: &Method, path: &str, params: &[(&str, &str)], headers: &HeaderMap) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Prefix(p) => prefix_matches(p, path),
            PathMatcher::Regex(r) => r.is_match(path),
        };
        path_ok
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.headers.iter().all(|(name, want)| {
                headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|v| want.accepts(v)))
            })
            && self.query.iter().all(|(name, want)| params.iter().any(|(k, v)| k == name && want.accepts(v)))
    }
}

/// `api` for `/api/users`, `` for `/`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// Gateway API `PathPrefix`: matches whole path elements (`/api` matches `/api` and `/api/x`,
/// not `/apix`); a trailing `/` in the prefix is ignored.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl ValueMatcher {
    fn accepts(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

type Rank = (
    u8,
    std::cmp::Reverse<usize>,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    Arc<str>,
    usize,
    usize,
);

fn rank(m: &Matcher, route: &Arc<str>, rule: usize, index: usize) -> Rank {
    use std::cmp::Reverse;
    let (kind, len) = match &m.path {
        PathMatcher::Exact(p) => (0, p.len()),
        PathMatcher::Regex(r) => (1, r.as_str().len()),
        PathMatcher::Prefix(p) => (2, p.trim_end_matches('/').len()),
    };
    (
        kind,
        Reverse(len),
        m.method.is_none(),
        Reverse(m.headers.len()),
        Reverse(m.query.len()),
        route.clone(),
        rule,
        index,
    )
}

fn compile_match(m: &pilotfish_api::route::RouteMatch, rule: usize) -> Matcher {
    let path = match &m.path {
        None => PathMatcher::Prefix("/".into()),
        Some(p) => match p.kind {
            PathMatchType::Exact => PathMatcher::Exact(p.value.clone()),
            PathMatchType::PathPrefix => PathMatcher::Prefix(p.value.clone()),
            PathMatchType::RegularExpression => PathMatcher::Regex(full_match(&p.value)),
        },
    };
    let value = |kind: ValueMatchType, v: &str| match kind {
        ValueMatchType::Exact => ValueMatcher::Exact(v.to_owned()),
        ValueMatchType::RegularExpression => ValueMatcher::Regex(full_match(v)),
    };
    Matcher {
        path,
        method: m.method.as_deref().and_then(|m| m.parse().ok()),
        headers: m
            .headers
            .iter()
            .filter_map(|h| Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, value(h.kind, &h.value))))
            .collect(),
        query: m.query_params.iter().map(|q| (q.name.clone(), value(q.kind, &q.value))).collect(),
        rule,
    }
}

fn full_match(pattern: &str) -> Regex {
    pilotfish_api::route::full_match_regex(pattern).expect("validated by the api crate in this form")
}

fn compile_rule(service: &Arc<str>, namespace: &str, source: &RouteSource<'_>, rule: &RouteRule) -> Rule {
    let backends = if rule.backend_refs.is_empty() {
        vec![(service.clone(), 1)]
    } else {
        rule.backend_refs
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| {
                let ns = b.namespace.as_deref().unwrap_or(namespace);
                (Arc::from(format!("{}.{ns}", b.name)), b.weight)
            })
            .collect()
    };
    let mut compiled = Rule::to_backends(source.name.clone(), source.id, backends);
    if let Some(t) = &rule.timeouts {
        compiled.request_timeout = t.request.map(|d| d.get()).filter(|d| !d.is_zero());
        compiled.try_timeout = t.backend_request.map(|d| d.get()).filter(|d| !d.is_zero());
    }
    compiled.retry = rule.retry.as_ref().map(|r| RetryRule {
        attempts: r.attempts,
        backoff: r.backoff.map(|d| d.get()),
        codes: r.codes.clone().unwrap_or_else(|| vec![502, 503, 504]),
    });
    for filter in &rule.filters {
        match filter {
            Filter::RequestHeaderModifier { modifier } => {
                compiled.request_headers = Some(HeaderMods::compile(modifier))
            }
            Filter::ResponseHeaderModifier { modifier } => {
                compiled.response_headers = Some(HeaderMods::compile(modifier))
            }
            Filter::RequestRedirect { redirect } => {
                compiled.redirect = Some(Redirect {
                    scheme: redirect.scheme.clone(),
                    hostname: redirect.hostname.clone(),
                    port: redirect.port,
                    path: redirect.path.clone(),
                    status: http::StatusCode::from_u16(redirect.status_code).expect("validated status"),
                })
            }
            Filter::UrlRewrite { rewrite } => {
                compiled.rewrite = Some(Rewrite {
                    hostname: rewrite.hostname.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
                    path: rewrite.path.clone(),
                })
            }
        }
    }
    compiled.rate_limit = source.rate_limit.clone();
    compiled
}

impl Rule {
    fn to_backends(route: Arc<str>, route_id: RouteId, backends: Vec<(Arc<str>, u32)>) -> Self {
        let total_weight = backends.iter().map(|(_, w)| *w).fold(0, u32::saturating_add);
        Self {
            route,
            route_id,
            backends,
            total_weight,
            request_timeout: None,
            try_timeout: None,
            retry: None,
            request_headers: None,
            response_headers: None,
            redirect: None,
            rewrite: None,
            rate_limit: None,
        }
    }

    /// A backend service by weight (traffic split).
    pub fn pick_backend(&self) -> &Arc<str> {
        if self.backends.len() == 1 {
            return &self.backends[0].0;
        }
        let mut ticket = fastrand::u32(0..self.total_weight);
        for (backend, weight) in &self.backends {
            if ticket < *weight {
                return backend;
            }
            ticket -= weight;
        }
        &self.backends[self.backends.len() - 1].0
    }
}

impl HeaderMods {
    fn compile(m: &HeaderModifier) -> Self {
        let pair = |h: &pilotfish_api::route::Header| {
            Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, HeaderValue::from_str(&h.value).ok()?))
        };
        Self {
            set: m.set.iter().filter_map(pair).collect(),
            add: m.add.iter().filter_map(pair).collect(),
            remove: m.remove.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// The path after a `ReplaceFullPath` / `ReplacePrefixMatch` modifier.
pub fn modify_path(path: &str, modifier: &PathModifier, matched_prefix: Option<&str>) -> String {
    match modifier {
        PathModifier::ReplaceFullPath { replace_full_path } => replace_full_path.clone(),
        PathModifier::ReplacePrefixMatch { replace_prefix_match } => {
            let prefix = matched_prefix.unwrap_or("/").trim_end_matches('/');
            let rest = path.strip_prefix(prefix).unwrap_or(path);
            let base = replace_prefix_match.trim_end_matches('/');
            match (base.is_empty(), rest.is_empty()) {
                (true, true) => "/".to_owned(),
                (true, false) => rest.to_owned(),
                (false, _) => format!("{base}{rest}"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
