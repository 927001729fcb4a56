//! User data over HTTPS: an in-process server with a certificate from a CA
//! made here. The binary accepts it when `SSL_CERT_FILE` holds that CA, and
//! refuses it, naming the URL and the reason, when the CA is not trusted
//! (the system's store, or another CA), applying nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

const USER_DATA: &str = "#cloud-config\nhostname: over-https\n";

/// A CA certificate (PEM) and what it takes to sign with it.
struct Ca {
    pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca { pem: cert.pem(), cert, key }
}

/// Accepts TLS connections for axum; a failed handshake (the client
/// refusing the certificate) is skipped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serves USER_DATA at /user-data over HTTPS on 127.0.0.1 with a
/// certificate `ca` signed; the base URL.
async fn serve(ca: &Ca) -> String {
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca.cert, &ca.key).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(Arc::new(config)) };
    let app = axum::Router::new().route("/user-data", axum::routing::get(|| async { USER_DATA }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("https://127.0.0.1:{}", addr.port())
}

/// Runs `ferrite-cloudinit apply ARGS --root ROOT` with `SSL_CERT_FILE`
/// set to `ca_file` (or unset, for the system's store).
async fn apply(root: &Path, ca_file: Option<&Path>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrite-cloudinit"));
    command.arg("apply").args(args).args(["--timeout", "20", "--root"]).arg(root);
    command.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    if let Some(file) = ca_file {
        command.env("SSL_CERT_FILE", file);
    }
    command.output().await.unwrap()
}

fn hostname(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("etc/hostname")).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_over_https_is_fetched_when_its_ca_is_trusted() {
    let ca = new_ca("ferrite test CA");
    let base = serve(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();

    let root = dir.path().join("from-url");
    let output = apply(&root, Some(&ca_file), &["--from-url", &format!("{base}/user-data")]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(hostname(&root).as_deref(), Some("over-https\n"));

    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, format!("root=/dev/vda cloud-config-url={base}/user-data quiet\n")).unwrap();
    let root = dir.path().join("from-cmdline");
    let output = apply(&root, Some(&ca_file), &["--from-proc-cmdline", &cmdline.to_string_lossy()]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(hostname(&root).as_deref(), Some("over-https\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_with_the_reason_and_nothing_is_applied() {
    let ca = new_ca("ferrite test CA");
    let base = serve(&ca).await;
    let url = format!("{base}/user-data");
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, new_ca("some other CA").pem).unwrap();

    for (case, ca_file) in [("the system's store", None), ("another CA", Some(other.as_path()))] {
        let root = dir.path().join("root");
        let started = std::time::Instant::now();
        let output = apply(&root, ca_file, &["--from-url", &url]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        assert!(stderr.contains(&url) && stderr.contains("UnknownIssuer"), "{case}: {stderr}");
        assert!(started.elapsed().as_secs() < 15, "{case}: a refused certificate is not retried until the timeout");
        assert!(!root.exists(), "{case}: nothing is applied");
    }
}
