//! The app's own probes, forwarded from the status port to the app's loopback as the kubelet
//! would have sent them: an `httpGet` answers with the app's status, a `tcpSocket` with 200
//! once a connection opens. An app that does not answer within the probe's timeout fails it, as
//! it would fail the kubelet's own probe.
//!
//! HTTPS probes do not verify the app's certificate, as the kubelet does not (its probes skip
//! verification); the handshake's signatures are still checked. They speak TLS 1.3, the only
//! version the sidecar's rustls is built with.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, HOST, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use pilotfish_api::app_probe::{AppProbe, HttpProbe, Scheme};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use crate::tls::verify::MeshServerVerifier;
use crate::transport;

/// What a forwarded probe found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The app answered (an `httpGet`) or accepted the connection (`tcpSocket`: 200).
    Answered(StatusCode),
    /// The app could not be reached, or did not answer in time: why.
    Unreachable(String),
}

/// Sends probes to the app on 127.0.0.1.
pub struct AppProber {
    tls: TlsConnector,
}

impl AppProber {
    pub fn new(provider: &Arc<CryptoProvider>) -> Self {
        let verifier = MeshServerVerifier::any_certificate(provider.signature_verification_algorithms);
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the sidecar's crypto provider supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Self { tls: TlsConnector::from(Arc::new(config)) }
    }

    /// Forwards one probe; `kubelet` is the probe request as it came (its `User-Agent` and
    /// `Accept` go on to the app, as if the kubelet had called it).
    pub async fn probe(&self, probe: &AppProbe, kubelet: &HeaderMap) -> Outcome {
        let timeout = probe.timeout();
        let attempt = async {
            let stream = transport::connect(([127, 0, 0, 1], probe.port()).into(), timeout)
                .await
                .map_err(|e| e.to_string())?;
            match probe {
                AppProbe::Tcp { .. } => Ok(StatusCode::OK),
                AppProbe::Http(http) => {
                    let req = request(http, kubelet)?;
                    match http.scheme {
                        Scheme::Http => exchange(stream, req).await,
                        Scheme::Https => {
                            let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
                            let tls =
                                self.tls.connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
                            exchange(tls, req).await
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(status)) => Outcome::Answered(status),
            Ok(Err(why)) => Outcome::Unreachable(why),
            Err(_) => {
                Outcome::Unreachable(format!("no answer within {}", humantime::format_duration(timeout)))
            }
        }
    }
}

/// The probe's request: `Host` is the app's loopback address unless the probe names one.
fn request(http: &HttpProbe, kubelet: &HeaderMap) -> Result<Request<Empty<Bytes>>, String> {
    let mut req = Request::get(http.path.as_str())
        .body(Empty::new())
        .map_err(|e| format!("the probe's path {:?}: {e}", http.path))?;
    let headers = req.headers_mut();
    let host =
        HeaderValue::try_from(format!("127.0.0.1:{}", http.port)).expect("an address is a header value");
    headers.insert(HOST, host);
    for name in [USER_AGENT, ACCEPT] {
        if let Some(value) = kubelet.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    // The probe's own headers replace those above, and may repeat a name.
    let own: Vec<(HeaderName, HeaderValue)> = http
        .headers
        .iter()
        .map(|(k, v)| Ok((HeaderName::try_from(k.as_str())?, HeaderValue::try_from(v.as_str())?)))
        .collect::<Result<_, http::Error>>()
        .map_err(|e| format!("the probe's headers: {e}"))?;
    for (name, _) in &own {
        headers.remove(name);
    }
    for (name, value) in own {
        headers.append(name, value);
    }
    Ok(req)
}

/// One request on a fresh connection; only the status matters.
async fn exchange<I>(io: I, req: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| format!("the app's answer: {e}"))?;
    Ok(res.status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn prober() -> AppProber {
        AppProber::new(&Arc::new(rustls::crypto::ring::default_provider()))
    }

    /// A one-shot app: answers the first request with `status`, and hands back what it read.
    async fn app(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (port, served)
    }

    fn http(port: u16, headers: &[(&str, &str)]) -> AppProbe {
        AppProbe::Http(HttpProbe {
            port,
            path: "/healthz?deep=1".into(),
            scheme: Scheme::Http,
            headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            timeout_seconds: None,
        })
    }

    #[tokio::test]
    async fn an_http_probe_answers_with_the_apps_status_and_carries_the_kubelets_headers() {
        let (port, served) = app(500).await;
        let mut kubelet = HeaderMap::new();
        kubelet.insert(USER_AGENT, HeaderValue::from_static("kube-probe/1.32"));
        kubelet.insert("x-other", HeaderValue::from_static("not forwarded"));
        let probe = http(port, &[("x-probe", "a"), ("x-probe", "b"), ("host", "web.local")]);
        assert_eq!(
            prober().probe(&probe, &kubelet).await,
            Outcome::Answered(StatusCode::INTERNAL_SERVER_ERROR)
        );
        let seen = served.await.unwrap().to_ascii_lowercase();
        assert!(seen.starts_with("get /healthz?deep=1 http/1.1\r\n"), "{seen}");
        for line in ["user-agent: kube-probe/1.32", "x-probe: a", "x-probe: b", "host: web.local"] {
            assert!(seen.contains(line), "{line} missing: {seen}");
        }
        assert!(!seen.contains("x-other") && !seen.contains("127.0.0.1"), "{seen}");
    }

    #[tokio::test]
    async fn an_https_probe_takes_any_certificate_as_the_kubelet_does() {
        // Self-signed, for another name: nothing the sidecar could verify.
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["app.invalid".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(stream).await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = tls.read(&mut buf).await.unwrap();
            tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            tls.flush().await.unwrap();
        });
        let AppProbe::Http(mut probe) = http(port, &[]) else { unreachable!() };
        probe.scheme = Scheme::Https;
        let outcome = prober().probe(&AppProbe::Http(probe), &HeaderMap::new()).await;
        assert_eq!(outcome, Outcome::Answered(StatusCode::NO_CONTENT));
    }

    #[tokio::test]
    async fn a_closed_port_or_a_silent_app_is_unreachable() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let tcp = AppProbe::Tcp { tcp: closed, timeout_seconds: None };
        assert!(matches!(prober().probe(&tcp, &HeaderMap::new()).await, Outcome::Unreachable(_)));

        // Accepts, never answers: the probe's timeout (1 s by default) decides.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        let outcome = prober().probe(&http(port, &[]), &HeaderMap::new()).await;
        assert_eq!(outcome, Outcome::Unreachable("no answer within 1s".into()));
        assert!(started.elapsed() < Duration::from_secs(3));

        let open = AppProbe::Tcp { tcp: port, timeout_seconds: None };
        assert_eq!(prober().probe(&open, &HeaderMap::new()).await, Outcome::Answered(StatusCode::OK));
    }
}
