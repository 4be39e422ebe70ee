//! The renew loop on tokio's paused clock, against a CA the test runs itself (rcgen signing the
//! loop's real CSRs): the schedule, backoff that keeps the valid certificate, refused answers,
//! readiness, pushed bundles (in force before their ACK, and over the CA's older one),
//! `renewBefore`, and the certificate report.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pilotfish_api::authz::MeshDefault;
use pilotfish_api::wire::{CertifyResponse, MeshSettings};
use pilotfish_api::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::time::Instant;

use super::{Certify, Clock, Renewer};
use crate::identity::mesh_feed::{self, MeshSender};
use crate::snapshot::{Overrides, Snapshot};
use crate::state::Shared;
use crate::telemetry::metrics::Metrics;

const SECOND: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(100);

/// What the test CA answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// A leaf valid for `TTL` from now.
    Certify,
    /// An error, as an unreachable CA.
    Fail,
    /// A leaf that expired a second ago.
    Expired,
    /// A leaf for `api` while saying it is for `web`.
    Mislabelled,
    /// Nothing, ever: a CA that hangs.
    Hang,
    /// As `Certify`, after five seconds.
    Slow,
}

/// A root that signs the loop's CSRs, on the test's clock, recording when it was asked.
struct TestCa {
    root: CertifiedIssuer<'static, KeyPair>,
    clock: Clock,
    start: Instant,
    answer: Mutex<Answer>,
    /// The bundle it answers with, when not its own root.
    answer_bundle: Mutex<Option<String>>,
    calls: Mutex<Vec<Duration>>,
}

impl TestCa {
    fn new(name: &str, clock: Clock) -> Arc<TestCa> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, format!("{name} root"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = clock();
        valid(&mut params, now - Duration::from_secs(3600), now + Duration::from_secs(86_400));
        let root = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let answer = Mutex::new(Answer::Certify);
        let start = Instant::now();
        Arc::new(TestCa {
            root,
            clock,
            start,
            answer,
            answer_bundle: Mutex::default(),
            calls: Mutex::default(),
        })
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn answer_bundle(&self, bundle: String) {
        *self.answer_bundle.lock().unwrap() = Some(bundle);
    }

    /// When the loop called, from the start of the test.
    fn calls(&self) -> Vec<Duration> {
        self.calls.lock().unwrap().clone()
    }

    fn bundle(&self) -> String {
        self.root.pem()
    }

    fn sign(&self, csr_pem: &str, account: &str, not_after: SystemTime) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id(account).to_string().try_into().unwrap())];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        valid(&mut params, (self.clock)() - Duration::from_secs(60), not_after);
        csr.params = params;
        csr.signed_by(&self.root).unwrap().pem()
    }
}

impl Certify for Arc<TestCa> {
    type Error = &'static str;

    fn certify(
        &self,
        csr_pem: String,
    ) -> impl std::future::Future<Output = Result<CertifyResponse, &'static str>> + Send {
        let ca = self.clone();
        async move {
            ca.calls.lock().unwrap().push(ca.start.elapsed());
            let answer = *ca.answer.lock().unwrap();
            let now = (ca.clock)();
            let (account, not_after) = match answer {
                Answer::Hang => std::future::pending().await,
                Answer::Slow => {
                    tokio::time::sleep(5 * SECOND).await;
                    ("web", now + TTL)
                }
                Answer::Fail => return Err("connection refused"),
                Answer::Certify => ("web", now + TTL),
                Answer::Expired => ("web", now - SECOND),
                Answer::Mislabelled => ("api", now + TTL),
            };
            Ok(CertifyResponse {
                chain_pem: ca.sign(&csr_pem, account, not_after),
                trust_bundle_pem: ca.answer_bundle.lock().unwrap().clone().unwrap_or_else(|| ca.bundle()),
                not_after: humantime::format_rfc3339_seconds(not_after).to_string(),
                identity: id("web"),
            })
        }
    }
}

fn id(account: &str) -> SpiffeId {
    SpiffeId::new("pilotfish.local", "default", account).unwrap()
}

/// Sets a certificate's validity (whole seconds, as X.509 keeps it).
fn valid(params: &mut CertificateParams, from: SystemTime, to: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let seconds = |t: SystemTime| Duration::from_secs(t.duration_since(UNIX_EPOCH).unwrap().as_secs());
    params.not_before = epoch + seconds(from);
    params.not_after = epoch + seconds(to);
}

/// The wall clock, moved by tokio's paused clock.
fn paused_clock() -> Clock {
    let (base, start) = (SystemTime::now(), Instant::now());
    Arc::new(move || base + start.elapsed())
}

/// A managed sidecar's shared state, its renew loop running against `ca` with `ca`'s root
/// pushed, and the push stream's end of the mesh settings.
fn start(ca: &Arc<TestCa>) -> (Arc<Shared>, MeshSender) {
    start_pushed(ca, ca.bundle())
}

/// As [`start`], with `bundle` pushed.
fn start_pushed(ca: &Arc<TestCa>, bundle: String) -> (Arc<Shared>, MeshSender) {
    let metrics = Metrics::new();
    let snap = Snapshot::build("t", "", &Overrides::default(), None, &metrics).unwrap();
    let shared = Shared::new(snap, metrics);
    shared.set_ready();
    let (tx, rx) = mesh_feed::channel();
    tx.publish(settings(bundle, None));
    tokio::spawn(renewer(ca, &shared).run(rx));
    (shared, tx)
}

fn renewer(ca: &Arc<TestCa>, shared: &Arc<Shared>) -> Renewer<Arc<TestCa>> {
    Renewer {
        ca: ca.clone(),
        shared: shared.clone(),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        clock: ca.clock.clone(),
    }
}

fn not_after(shared: &Shared) -> Option<SystemTime> {
    shared.identity.load().as_ref().map(|i| i.not_after)
}

fn renewals(shared: &Shared, result: &str) -> u64 {
    let text = String::from_utf8(shared.metrics.encode()).unwrap();
    let series = format!("pilotfish_identity_cert_renewals_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.parse().unwrap())
}

fn settings(bundle: String, renew_before: Option<String>) -> MeshSettings {
    MeshSettings {
        trust_domain: "pilotfish.local".into(),
        trust_bundle_pem: bundle,
        authz_default: MeshDefault::Authenticated,
        renew_before,
    }
}

/// A sidecar holding its first certificate from a CA, and the CA of the root a rotation will
/// bring.
async fn certified_before_a_rotation() -> (Arc<TestCa>, Arc<TestCa>, Arc<Shared>, MeshSender) {
    let ca = TestCa::new("mesh", paused_clock());
    let next = TestCa::new("next", ca.clock.clone());
    let (shared, push) = start(&ca);
    tokio::time::sleep(SECOND).await;
    assert!(shared.identity.load().is_some());
    (ca, next, shared, push)
}

/// The fingerprints of the roots in force.
fn roots(shared: &Shared) -> Vec<String> {
    let report = shared.identity_status.report(shared.identity.load().as_deref());
    report["roots"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect()
}

/// The root the certificate report names.
fn reported_root(shared: &Shared) -> Option<String> {
    shared.reported.borrow().as_ref().and_then(|r| r.certificate.root.clone())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[tokio::test(start_paused = true)]
async fn certifies_at_once_then_renews_at_65_to_75_percent_of_the_lifetime() {
    let ca = TestCa::new("mesh", paused_clock());
    let (shared, _push) = start(&ca);
    tokio::time::sleep(SECOND).await;
    assert_eq!(shared.identity.load().as_ref().unwrap().id, id("web"));
    assert!(shared.is_ready());
    // Renewals at 65-75 s apart: the third is due by 150 s, the fourth not before 190 s.
    tokio::time::sleep(TTL * 19 / 10 - SECOND).await;
    let calls = ca.calls();
    assert!(calls[0] < SECOND, "{calls:?}");
    for pair in calls.windows(2) {
        let gap = pair[1] - pair[0];
        // A second less: the certificate's NotAfter is whole seconds.
        assert!(gap >= TTL * 65 / 100 - SECOND && gap <= TTL * 75 / 100, "{calls:?}");
    }
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!((renewals(&shared, "ok"), renewals(&shared, "error")), (3, 0));
    let report = shared.identity_status.report(shared.identity.load().as_deref());
    assert_eq!(report["lastRenewal"]["result"], "ok");
    assert!(report["nextRenewal"].is_string(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_keeps_the_valid_certificate_and_retries_with_backoff() {
    let ca = TestCa::new("mesh", paused_clock());
    let (shared, _push) = start(&ca);
    tokio::time::sleep(SECOND).await;
    let first = not_after(&shared).unwrap();
    ca.answer(Answer::Fail);
    tokio::time::sleep(TTL - 2 * SECOND).await;
    // Still the first certificate, valid to the end; every failure counted.
    assert_eq!(not_after(&shared), Some(first));
    let calls = ca.calls();
    let failed = calls.len() as u64 - 1;
    assert!(failed >= 3, "several retries before expiry: {calls:?}");
    assert_eq!((renewals(&shared, "ok"), renewals(&shared, "error")), (1, failed));
    for pair in calls[1..].windows(2) {
        let gap = pair[1] - pair[0];
        // At least a second apart; never longer than a quarter of what was left.
        let left = TTL.saturating_sub(pair[0]);
        assert!(gap >= SECOND && gap <= (left / 4).max(SECOND), "{calls:?}");
    }
    let report = shared.identity_status.report(shared.identity.load().as_deref());
    assert_eq!(report["lastRenewal"]["error"], "the CA did not certify: connection refused");

    // The CA is back: the next retry renews.
    ca.answer(Answer::Certify);
    tokio::time::sleep(5 * SECOND).await;
    assert!(not_after(&shared).unwrap() > first);
    assert_eq!(renewals(&shared, "ok"), 2);
}

#[tokio::test(start_paused = true)]
async fn an_expired_or_mislabelled_answer_is_refused() {
    let ca = TestCa::new("mesh", paused_clock());
    let (shared, _push) = start(&ca);
    tokio::time::sleep(SECOND).await;
    let first = not_after(&shared).unwrap();
    ca.answer(Answer::Expired);
    tokio::time::sleep(TTL * 75 / 100).await;
    assert_eq!(not_after(&shared), Some(first));
    let report = shared.identity_status.report(shared.identity.load().as_deref());
    let error = report["lastRenewal"]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("certificate expired at"), "{error}");

    ca.answer(Answer::Mislabelled);
    let before = renewals(&shared, "error");
    tokio::time::sleep(10 * SECOND).await;
    assert!(renewals(&shared, "error") > before);
    assert_eq!(shared.identity.load().as_ref().unwrap().id, id("web"));
    let report = shared.identity_status.report(shared.identity.load().as_deref());
    let error = report["lastRenewal"]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("names spiffe://pilotfish.local/ns/default/sa/api"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_managed_sidecar_is_not_ready_until_its_first_certificate() {
    let ca = TestCa::new("mesh", paused_clock());
    ca.answer(Answer::Fail);
    let (shared, _push) = start(&ca);
    tokio::time::sleep(3 * SECOND).await;
    assert!(!shared.is_ready());
    let pending = shared.identity_pending().unwrap();
    assert!(pending.contains("no mesh identity yet") && pending.contains("connection refused"), "{pending}");
    ca.answer(Answer::Certify);
    tokio::time::sleep(40 * SECOND).await;
    assert!(shared.is_ready(), "{:?}", shared.identity_pending());
}

#[tokio::test(start_paused = true)]
async fn a_pushed_bundle_is_put_in_force_around_the_same_certificate() {
    let (ca, next, shared, push) = certified_before_a_rotation().await;
    let first = shared.identity.load_full().unwrap();

    // A rotation's overlap: both roots. New configs, the same certificate, no CA call.
    push.publish(settings(format!("{}{}", ca.bundle(), next.bundle()), None));
    tokio::time::sleep(SECOND).await;
    let now = shared.identity.load_full().unwrap();
    assert!(!Arc::ptr_eq(&first, &now));
    assert_eq!(now.not_after, first.not_after);
    let report = shared.identity_status.report(Some(&now));
    assert_eq!(report["roots"].as_array().unwrap().len(), 2);
    assert_eq!(ca.calls().len(), 1);

    // The old root retired while this certificate still chains to it: renewed at once.
    push.publish(settings(next.bundle(), None));
    tokio::time::sleep(2 * SECOND).await;
    assert_eq!(ca.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn renew_before_renews_a_certificate_that_arrived_earlier_once() {
    let ca = TestCa::new("mesh", paused_clock());
    let (shared, push) = start(&ca);
    tokio::time::sleep(10 * SECOND).await;
    let bundle = ca.bundle();
    let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();

    // Before this certificate arrived: nothing to do.
    push.publish(settings(bundle.clone(), Some(time((ca.clock)() - 20 * SECOND))));
    tokio::time::sleep(2 * SECOND).await;
    assert_eq!(ca.calls().len(), 1);

    // After it: renewed now, and only once however often the push stream repeats it.
    let switch = Some(time((ca.clock)()));
    push.publish(settings(bundle.clone(), switch.clone()));
    tokio::time::sleep(2 * SECOND).await;
    assert_eq!(ca.calls().len(), 2);
    // Repeated with another bundle (the push stream wakes the loop only on a change).
    let next = TestCa::new("next", ca.clock.clone());
    push.publish(settings(format!("{bundle}{}", next.bundle()), switch));
    tokio::time::sleep(10 * SECOND).await;
    assert_eq!(ca.calls().len(), 2);
    assert_eq!(renewals(&shared, "ok"), 2);
}

#[tokio::test(start_paused = true)]
async fn without_mesh_settings_there_is_no_ca_to_ask_and_no_identity_to_wait_for() {
    let ca = TestCa::new("mesh", paused_clock());
    let metrics = Metrics::new();
    let snap = Snapshot::build("t", "", &Overrides::default(), None, &metrics).unwrap();
    let shared = Shared::new(snap, metrics);
    shared.set_ready();
    let (push, rx) = mesh_feed::channel();
    tokio::spawn(renewer(&ca, &shared).run(rx));
    tokio::time::sleep(10 * SECOND).await;
    assert!(ca.calls().is_empty());
    assert!(shared.is_ready() && shared.identity.load().is_none());
    // The control plane becomes a CA: now it is asked, and readiness waits for the answer.
    ca.answer(Answer::Fail);
    push.publish(settings(ca.bundle(), None));
    tokio::time::sleep(SECOND / 2).await;
    assert_eq!(ca.calls().len(), 1);
    assert!(!shared.is_ready());
    ca.answer(Answer::Certify);
    tokio::time::sleep(20 * SECOND).await;
    assert!(shared.is_ready() && shared.identity.load().is_some());
}

#[tokio::test(start_paused = true)]
async fn the_report_names_the_leaf_the_root_it_chains_to_and_the_roots_trusted() {
    let (ca, next, shared, push) = certified_before_a_rotation().await;
    let mut installed = shared.reported.subscribe();
    let reported = shared.reported.borrow().clone().unwrap();
    assert_eq!(reported.trusted_roots, roots(&shared));
    let report = reported.certificate;
    assert_eq!(report.identity, "spiffe://pilotfish.local/ns/default/sa/web");
    let not_after = not_after(&shared).unwrap();
    assert_eq!(report.not_after, humantime::format_rfc3339_seconds(not_after).to_string());
    let old_root = roots(&shared).pop();
    assert_eq!(report.root, old_root);

    // A second root in the bundle: the same certificate, trusting both roots; the push client
    // is woken to report them.
    let overlap = format!("{}{}", next.bundle(), ca.bundle());
    push.publish(settings(overlap.clone(), None));
    assert!(push.in_force(&overlap).await);
    assert_eq!(roots(&shared).len(), 2);
    assert!(installed.has_changed().unwrap());
    let reported = installed.borrow_and_update().clone().unwrap();
    assert_eq!((&reported.certificate, &reported.trusted_roots), (&report, &roots(&shared)));
}

#[tokio::test(start_paused = true)]
async fn a_bundle_pushed_while_the_ca_hangs_is_in_force_before_its_ack() {
    let (ca, next, shared, push) = certified_before_a_rotation().await;
    // A renewal that never comes back.
    ca.answer(Answer::Hang);
    push.publish(settings(ca.bundle(), Some(rfc3339((ca.clock)()))));
    tokio::time::sleep(SECOND).await;
    assert_eq!(ca.calls().len(), 2);

    // A rotation adds a root meanwhile: in force as soon as it is pushed.
    let start = Instant::now();
    let overlap = format!("{}{}", ca.bundle(), next.bundle());
    push.publish(settings(overlap.clone(), None));
    assert!(push.in_force(&overlap).await);
    assert!(start.elapsed() < SECOND, "{:?}", start.elapsed());
    assert_eq!(roots(&shared).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_certificate_goes_in_force_with_the_newest_pushed_bundle_not_the_cas_older_one() {
    // The old root is retired (pushed: the new root alone), but the CA's answer still lists it.
    let old = TestCa::new("old", paused_clock());
    let ca = TestCa::new("next", old.clock.clone());
    ca.answer_bundle(format!("{}{}", old.bundle(), ca.bundle()));
    let (shared, _push) = start(&ca);
    tokio::time::sleep(SECOND).await;
    let in_force = roots(&shared);
    assert_eq!(in_force.len(), 1, "the retired root came back: {in_force:?}");
    assert_eq!(reported_root(&shared).as_ref(), in_force.first());
    // And on every renewal.
    tokio::time::sleep(TTL * 8 / 10).await;
    assert_eq!(ca.calls().len(), 2);
    assert_eq!(roots(&shared), in_force);
}

#[tokio::test(start_paused = true)]
async fn when_the_push_is_behind_the_ca_its_answers_bundle_is_used_until_the_next_push() {
    // The CA issues from the new root; the push stream has not brought it yet.
    let old = TestCa::new("old", paused_clock());
    let ca = TestCa::new("next", old.clock.clone());
    let both = format!("{}{}", old.bundle(), ca.bundle());
    ca.answer_bundle(both.clone());
    let (shared, push) = start_pushed(&ca, old.bundle());
    tokio::time::sleep(SECOND).await;
    assert!(shared.identity.load().is_some());
    let in_force = roots(&shared);
    assert_eq!(in_force.len(), 2);
    assert_eq!(reported_root(&shared).as_ref(), in_force.get(1));

    // The next push puts its bundle in force; the certificate chains to it, so no renewal.
    push.publish(settings(ca.bundle(), None));
    tokio::time::sleep(SECOND).await;
    assert_eq!(roots(&shared), in_force[1..]);
    assert_eq!(ca.calls().len(), 1);

    // A certificate that chains to neither bundle is refused.
    let stranger = TestCa::new("stranger", old.clock.clone());
    stranger.answer_bundle(old.bundle());
    let (shared, _push) = start_pushed(&stranger, old.bundle());
    tokio::time::sleep(SECOND / 2).await;
    assert!(shared.identity.load().is_none());
    assert_eq!(renewals(&shared, "error"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_renew_before_that_comes_while_an_attempt_is_on_its_way_renews_again_after_it() {
    let (ca, _next, shared, push) = certified_before_a_rotation().await;
    ca.answer(Answer::Slow);
    push.publish(settings(ca.bundle(), Some(rfc3339((ca.clock)()))));
    tokio::time::sleep(SECOND).await;
    assert_eq!(ca.calls().len(), 2);
    // The CA switches issuers meanwhile: the answer on its way may be the old issuer's.
    push.publish(settings(ca.bundle(), Some(rfc3339((ca.clock)()))));
    tokio::time::sleep(10 * SECOND).await;
    assert_eq!(ca.calls().len(), 3, "{:?}", ca.calls());
    // Once.
    tokio::time::sleep(20 * SECOND).await;
    assert_eq!(ca.calls().len(), 3, "{:?}", ca.calls());
    assert_eq!(renewals(&shared, "ok"), 3);
}
