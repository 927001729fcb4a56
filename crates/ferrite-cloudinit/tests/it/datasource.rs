//! Every datasource against a fake served in-process on loopback (or a
//! temporary directory): the fakes insist on what the real services insist
//! on (EC2's session token, GCE's `Metadata-Flavor` header), so a client
//! that forgets it fails here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use ferrite_cloudinit::datasource::{first_available, Datasource, Fetched, Http};

#[derive(Default)]
struct Fake {
    routes: HashMap<&'static str, String>,
    /// IMDSv2: the token PUT /latest/api/token hands out and every GET must carry.
    token: Option<&'static str>,
    /// A header every request must carry.
    require: Option<(&'static str, &'static str)>,
    /// Answer 404 to this many requests before serving.
    not_yet: AtomicUsize,
}

async fn answer(State(fake): State<Arc<Fake>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let status = |code: StatusCode| Response::builder().status(code).body(Body::empty()).unwrap();
    if fake.not_yet.load(Ordering::SeqCst) > 0 {
        fake.not_yet.fetch_sub(1, Ordering::SeqCst);
        return status(StatusCode::NOT_FOUND);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some((name, value)) = fake.require {
        if header(name).as_deref() != Some(value) {
            return status(StatusCode::FORBIDDEN);
        }
    }
    if method == Method::PUT && uri.path() == "/latest/api/token" {
        return match (fake.token, header("X-aws-ec2-metadata-token-ttl-seconds")) {
            (Some(token), Some(_)) => Response::new(Body::from(token)),
            (Some(_), None) => status(StatusCode::BAD_REQUEST),
            (None, _) => status(StatusCode::FORBIDDEN),
        };
    }
    if let Some(token) = fake.token {
        if header("X-aws-ec2-metadata-token").as_deref() != Some(token) {
            return status(StatusCode::UNAUTHORIZED);
        }
    }
    match fake.routes.get(uri.path()) {
        Some(body) if method == Method::GET => Response::new(Body::from(body.clone())),
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// Serves `fake` on 127.0.0.1; its base URL.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(answer).with_state(Arc::new(fake));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn routes(pairs: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn ec2_routes() -> HashMap<&'static str, String> {
    routes(&[
        ("/latest/user-data", "#cloud-config\nhostname: from-user-data\n"),
        ("/latest/meta-data/hostname", "ip-10-0-0-5.ec2.internal"),
        ("/latest/meta-data/local-ipv4", "10.0.0.5"),
        ("/latest/meta-data/public-ipv4", "203.0.113.5"),
        ("/latest/meta-data/ipv6", "2001:db8:ec2::5"),
        ("/latest/meta-data/public-keys", "0=my-key"),
        ("/latest/meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAAec2 my-key\n"),
    ])
}

async fn fetch(source: Datasource) -> Fetched {
    source.fetch(&Http::default()).await.unwrap_or_else(|e| panic!("{e}"))
}

fn assert_ec2_like(fetched: &Fetched) {
    assert_eq!(fetched.user_data.as_deref(), Some(&b"#cloud-config\nhostname: from-user-data\n"[..]));
    let m = &fetched.metadata;
    assert_eq!(m.addresses.private_ipv4, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(m.addresses.public_ipv4, Some("203.0.113.5".parse().unwrap()));
    assert_eq!(m.hostname.as_deref(), Some("ip-10-0-0-5.ec2.internal"));
    assert_eq!(m.ssh_public_keys, ["ssh-ed25519 AAAAec2 my-key"]);
}

/// EC2's IPv6 address is globally routable: both `$private_ipv6` and `$public_ipv6`.
fn assert_ec2_ipv6(fetched: &Fetched) {
    let ipv6 = Some("2001:db8:ec2::5".parse().unwrap());
    assert_eq!((fetched.metadata.addresses.private_ipv6, fetched.metadata.addresses.public_ipv6), (ipv6, ipv6));
}

#[tokio::test]
async fn ec2_with_an_imdsv2_session_token() {
    let base = serve(Fake { routes: ec2_routes(), token: Some("session-token"), ..Fake::default() }).await;
    let fetched = fetch(Datasource::Ec2(base)).await;
    assert_ec2_like(&fetched);
    assert_ec2_ipv6(&fetched);
}

#[tokio::test]
async fn ec2_falls_back_to_imdsv1_when_tokens_are_refused() {
    let base = serve(Fake { routes: ec2_routes(), token: None, ..Fake::default() }).await;
    let fetched = fetch(Datasource::Ec2(base)).await;
    assert_ec2_like(&fetched);
    assert_ec2_ipv6(&fetched);
}

#[tokio::test]
async fn ec2_without_ipv6_has_no_ipv6_addresses() {
    let mut routes = ec2_routes();
    routes.remove("/latest/meta-data/ipv6");
    let base = serve(Fake { routes, token: None, ..Fake::default() }).await;
    let addresses = fetch(Datasource::Ec2(base)).await.metadata.addresses;
    assert_eq!((addresses.private_ipv6, addresses.public_ipv6), (None, None));
    assert_eq!(addresses.private_ipv4, Some("10.0.0.5".parse().unwrap()));
}

async fn gce(ipv6s: &str) -> Fetched {
    let base = serve(Fake {
        routes: routes(&[
            ("/computeMetadata/v1/instance/attributes/user-data", "#cloud-config\nhostname: from-user-data\n"),
            ("/computeMetadata/v1/instance/hostname", "ip-10-0-0-5.ec2.internal"),
            ("/computeMetadata/v1/instance/network-interfaces/0/ip", "10.0.0.5"),
            ("/computeMetadata/v1/instance/network-interfaces/0/access-configs/0/external-ip", "203.0.113.5"),
            ("/computeMetadata/v1/instance/network-interfaces/0/ipv6s", ipv6s),
            ("/computeMetadata/v1/project/attributes/ssh-keys", "core:ssh-ed25519 AAAAec2 my-key"),
        ]),
        require: Some(("Metadata-Flavor", "Google")),
        ..Fake::default()
    })
    .await;
    fetch(Datasource::Gce(base)).await
}

#[tokio::test]
async fn gce_sends_metadata_flavor() {
    assert_ec2_like(&gce("").await);
}

#[tokio::test]
async fn gce_ipv6_internal_is_private_only_and_external_is_both() {
    let internal = gce("fd20:a:b::5\n").await.metadata.addresses;
    assert_eq!(internal.private_ipv6, Some("fd20:a:b::5".parse().unwrap()));
    assert_eq!(internal.public_ipv6, None, "a unique-local address is not public");
    let external = gce("2600:1900:4000:1::5\n").await.metadata.addresses;
    assert_eq!(external.private_ipv6, Some("2600:1900:4000:1::5".parse().unwrap()));
    assert_eq!(external.public_ipv6, external.private_ipv6);
}

#[tokio::test]
async fn digitalocean_reads_its_json_document() {
    let base = serve(Fake {
        routes: routes(&[
            ("/metadata/v1/user-data", "#cloud-config\nhostname: from-user-data\n"),
            (
                "/metadata/v1.json",
                r#"{"droplet_id":1,"hostname":"ip-10-0-0-5.ec2.internal","public_keys":["ssh-ed25519 AAAAec2 my-key"],
                   "interfaces":{"public":[{"ipv4":{"ip_address":"203.0.113.5"},"ipv6":{"ip_address":"2001:db8::5"}}],
                                 "private":[{"ipv4":{"ip_address":"10.0.0.5"}}]}}"#,
            ),
        ]),
        ..Fake::default()
    })
    .await;
    let fetched = fetch(Datasource::DigitalOcean(base)).await;
    assert_ec2_like(&fetched);
    assert_eq!(fetched.metadata.addresses.public_ipv6, Some("2001:db8::5".parse().unwrap()));
}

#[tokio::test]
async fn openstack_metadata_service() {
    let base = serve(Fake {
        routes: routes(&[
            ("/openstack/latest/user_data", "#cloud-config\nhostname: from-user-data\n"),
            (
                "/openstack/latest/meta_data.json",
                r#"{"hostname":"ip-10-0-0-5.ec2.internal","public_keys":{"my-key":"ssh-ed25519 AAAAec2 my-key\n"}}"#,
            ),
            ("/latest/meta-data/local-ipv4", "10.0.0.5"),
            ("/latest/meta-data/public-ipv4", "203.0.113.5"),
        ]),
        ..Fake::default()
    })
    .await;
    assert_ec2_like(&fetch(Datasource::OpenStack(base)).await);
}

#[tokio::test]
async fn a_config_drive_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("openstack/latest")).unwrap();
    std::fs::create_dir_all(root.join("ec2/latest")).unwrap();
    std::fs::write(root.join("openstack/latest/user_data"), "#cloud-config\nhostname: from-user-data\n").unwrap();
    std::fs::write(
        root.join("openstack/latest/meta_data.json"),
        r#"{"hostname":"ip-10-0-0-5.ec2.internal","public_keys":{"my-key":"ssh-ed25519 AAAAec2 my-key"}}"#,
    )
    .unwrap();
    std::fs::write(root.join("ec2/latest/meta-data.json"), r#"{"local-ipv4":"10.0.0.5","public-ipv4":"203.0.113.5"}"#)
        .unwrap();
    assert_ec2_like(&fetch(Datasource::ConfigDrive(root.to_owned())).await);
    assert!(Datasource::ConfigDrive(root.join("nothing")).fetch(&Http::default()).await.is_err());
}

#[tokio::test]
async fn files_the_oem_partition_and_fw_cfg() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw");
    std::fs::write(&path, "#cloud-config\n").unwrap();
    for source in [Datasource::File(path.clone()), Datasource::Oem(path.clone()), Datasource::FwCfg(path.clone())] {
        assert_eq!(fetch(source).await.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
    }
    assert!(Datasource::FwCfg(dir.path().join("absent")).fetch(&Http::default()).await.is_err());
}

#[tokio::test]
async fn a_url_and_the_kernel_command_line() {
    let base = serve(Fake { routes: routes(&[("/cc", "#cloud-config\nhostname: a\n")]), ..Fake::default() }).await;
    let fetched = fetch(Datasource::Url(format!("{base}/cc"))).await;
    assert_eq!(fetched.user_data.as_deref(), Some(&b"#cloud-config\nhostname: a\n"[..]));

    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, format!("root=/dev/vda quiet cloud-config-url={base}/cc\n")).unwrap();
    assert_eq!(fetch(Datasource::ProcCmdline(cmdline.clone())).await.user_data, fetched.user_data);
    std::fs::write(&cmdline, "root=/dev/vda quiet\n").unwrap();
    assert!(Datasource::ProcCmdline(cmdline).fetch(&Http::default()).await.is_err());
}

#[tokio::test]
async fn sources_are_polled_until_one_answers() {
    let base =
        serve(Fake { routes: routes(&[("/cc", "#cloud-config\n")]), not_yet: AtomicUsize::new(3), ..Fake::default() })
            .await;
    let sources = [Datasource::File("/nonexistent/user-data".into()), Datasource::Url(format!("{base}/cc"))];
    let http = Http::default();
    let (source, fetched) = first_available(&sources, Duration::from_secs(30), &http).await.unwrap().unwrap();
    assert_eq!(source, sources[1]);
    assert_eq!(fetched.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
    assert!(http.is_built());

    // Local sources alone never build the HTTP client (nor read the
    // trust store it loads).
    let http = Http::default();
    let none = first_available(&sources[..1], Duration::from_millis(300), &http).await;
    assert!(none.unwrap().is_none(), "nothing there is no error");
    assert!(!http.is_built(), "a local source built the HTTP client");
}

/// A source whose answer is unusable (here a config drive whose
/// meta_data.json is not JSON) is reported and not asked again: another
/// source still wins, and when none does, its error is the result, at once
/// rather than at the timeout.
#[tokio::test]
async fn an_unusable_source_is_dropped_and_is_the_error_when_nothing_answers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("openstack/latest")).unwrap();
    std::fs::write(dir.path().join("openstack/latest/meta_data.json"), "{not json").unwrap();
    let file = dir.path().join("user-data");
    std::fs::write(&file, "#cloud-config\n").unwrap();
    let sources = [Datasource::ConfigDrive(dir.path().to_owned()), Datasource::File(file)];
    let (source, _) = first_available(&sources, Duration::from_secs(30), &Http::default()).await.unwrap().unwrap();
    assert_eq!(source, sources[1]);

    let started = std::time::Instant::now();
    let error = first_available(&sources[..1], Duration::from_secs(30), &Http::default()).await.unwrap_err();
    assert!(error.to_string().contains("meta_data.json"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "not retried until the timeout");
}

#[tokio::test]
async fn the_binary_applies_ec2_metadata_to_a_tree() {
    let base = serve(Fake { routes: ec2_routes(), token: Some("t"), ..Fake::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let meta = std::fs::metadata(root).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("home/core")).unwrap();
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::write(root.join("etc/passwd"), format!("core:x:{}:{}::/home/core:/bin/sh\n", meta.uid(), meta.gid()))
            .unwrap();
    }
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrite-cloudinit"))
        .args(["apply", "--timeout", "20", "--from-ec2-metadata", &base, "--root"])
        .arg(root)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("etc/hostname"), "from-user-data\n", "the config's hostname wins over metadata's");
    assert_eq!(
        read("etc/environment"),
        "COREOS_PRIVATE_IPV4=10.0.0.5\nCOREOS_PRIVATE_IPV6=2001:db8:ec2::5\nCOREOS_PUBLIC_IPV4=203.0.113.5\nCOREOS_PUBLIC_IPV6=2001:db8:ec2::5\n"
    );
    assert_eq!(read("home/core/.ssh/authorized_keys"), "ssh-ed25519 AAAAec2 my-key\n");
    assert!(Path::new(&root.join("home/core/.ssh/authorized_keys.d/ferrite-cloudinit")).exists());
}
