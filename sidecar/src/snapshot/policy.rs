//! A service's `BackendPolicy` (or the defaults) compiled into the form the request path reads:
//! balancer, breaker failure kinds, limits, retry conditions and backoff, replay buffer size,
//! health check.

use std::time::Duration;

use pilotfish_api::policy::{
    grpc_code, BackendPolicySpec, FailureKind, HealthCheck, LoadBalancer, ServiceLimits, TargetRef,
};

use crate::resilience::retry::Conditions;

pub struct ServicePolicy {
    pub load_balancer: LoadBalancer,
    pub failure_on: Vec<FailureKind>,
    pub limits: ServiceLimits,
    pub conditions: Conditions,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub max_body_bytes: u64,
    pub health_check: Option<HealthCheck>,
}

impl ServicePolicy {
    pub fn new(policy: Option<&BackendPolicySpec>) -> Self {
        let p = policy.cloned().unwrap_or_else(|| BackendPolicySpec {
            target_ref: TargetRef {
                group: None,
                kind: "Service".into(),
                name: String::new(),
                namespace: None,
            },
            load_balancer: LoadBalancer::default(),
            circuit_breaker: Default::default(),
            limits: Default::default(),
            retry_budget: Default::default(),
            retry: Default::default(),
            health_check: None,
        });
        Self {
            load_balancer: p.load_balancer,
            failure_on: p.circuit_breaker.failure_on,
            limits: p.limits,
            conditions: Conditions {
                retry_on: p.retry.retry_on,
                grpc_codes: p.retry.grpc_codes.iter().filter_map(|c| grpc_code(c)).collect(),
            },
            base_backoff: p.retry.base_backoff.get(),
            max_backoff: p.retry.max_backoff.get(),
            max_body_bytes: u64::from(p.retry.max_body_bytes),
            health_check: p.health_check,
        }
    }
}
