//! The walkthrough on one host, as its unit files run it
//! (`os-config/examples/walkthrough/`): ferrite-store, then in containers
//! on the real Docker engine the registrator, redis, the redis ambassador
//! and the weather app linked to the ambassador as `redis`. It ends as the
//! walkthrough does: `redis-cli get currentweather` in the redis container
//! equals what the app serves over HTTP.
//!
//! Containers reach the store and each other's published ports through
//! the Docker bridge's gateway address (the host's side of `docker0`),
//! the stand-in for a machine's private IP.
//!
//! `cargo build --workspace --bins && cargo test -p ferrite-walkthrough --features system-tests --test system`

use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_etcd_client::{Client, GetOptions};
use ferrite_testkit::images::{bridge_gateway, workspace_bin, Container, Image, Imported};
use ferrite_testkit::{free_port, Process};

fn image(name: &str, binary: &str, entrypoint: &[&str], expose: Option<&str>, sfx: &str) -> Imported {
    let mut image = Image::new(&format!("ferrite-test/{name}-{sfx}:latest"))
        .binary(workspace_bin(binary), &format!("/usr/bin/{binary}"))
        .entrypoint(entrypoint);
    if let Some(port) = expose {
        image = image.expose(port);
    }
    image.import().unwrap()
}

/// ferrite-store serving clients on the bridge's gateway address, so
/// containers reach it.
async fn store_on(gateway: &str, dir: &std::path::Path) -> (Process, String) {
    let client_url = format!("http://{gateway}:{}", free_port().unwrap());
    let peer_url = format!("http://127.0.0.1:{}", free_port().unwrap());
    let mut command = Command::new(workspace_bin("ferrite-store"));
    command
        .args(["--name", "walk", "--data-dir"])
        .arg(dir.join("store"))
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("walk={peer_url}")]);
    let mut process = Process::spawn("ferrite-store", command, &dir.join("store.log")).unwrap();
    let client = Client::new([&client_url]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.health().await.is_ok_and(|h| h.is_healthy()) {
        assert!(process.is_running(), "ferrite-store exited:\n{}", process.log_tail(30));
        assert!(Instant::now() < deadline, "ferrite-store not healthy:\n{}", process.log_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (process, client_url)
}

#[tokio::test]
async fn the_weather_app_caches_in_redis_through_the_ambassador() {
    let sfx = format!("{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let gateway = bridge_gateway().unwrap();
    let (_store, store_url) = store_on(&gateway, dir.path()).await;
    let store_hostport = store_url.trim_start_matches("http://").to_owned();
    let client = Client::new([&store_url]).unwrap();
    let prefix = format!("/services-{sfx}");

    let registrator_image = image("registrator", "ferrite-registrator", &["/usr/bin/ferrite-registrator"], None, &sfx);
    let ambassador_image =
        image("ambassador", "ferrite-ambassador", &["/usr/bin/ferrite-ambassador"], Some("10000/tcp"), &sfx);
    let weather_image = image("weather", "ferrite-weather", &["/usr/bin/ferrite-weather"], Some("8080/tcp"), &sfx);
    let redis_image = Image::new(&format!("ferrite-test/redis-{sfx}:latest"))
        .binary("/usr/bin/redis-server", "/usr/bin/redis-server")
        .binary("/usr/bin/redis-cli", "/usr/bin/redis-cli")
        .entrypoint(&["/usr/bin/redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"])
        .expose("6379/tcp")
        .import()
        .unwrap();

    // registrator.service
    let registrator = Container::run(
        &format!("registrator-{sfx}"),
        &[
            "-h",
            &format!("walk-{sfx}"),
            "-v",
            "/var/run/docker.sock:/tmp/docker.sock",
            "-e",
            "DOCKER_HOST=unix:///tmp/docker.sock",
            registrator_image.as_str(),
            "-ip",
            &gateway,
            "-ttl",
            "30",
            "-ttl-refresh",
            "10",
            "-cleanup",
            &format!("etcd://{store_hostport}{prefix}"),
        ],
    )
    .unwrap();

    // redis.service
    let redis_service = format!("redis-{sfx}");
    let redis = Container::run(
        &format!("redis-{sfx}"),
        &["-p", "6379", "-e", &format!("SERVICE_NAME={redis_service}"), redis_image.as_str()],
    )
    .unwrap();
    let redis_port = redis.host_port("6379/tcp").unwrap();
    let redis_key = format!("{prefix}/{redis_service}/walk-{sfx}:redis-{sfx}:6379");
    let value = registered(&client, &redis_key, &registrator).await;
    assert_eq!(value, Some(format!("{gateway}:{redis_port}")));

    // redis-ambassador.service
    let ambassador = Container::run(
        &format!("redis-ambassador-{sfx}"),
        &[ambassador_image.as_str(), "--etcd-endpoints", &store_url, &format!("{prefix}/{redis_service}")],
    )
    .unwrap();

    // weather.service
    let weather = Container::run(
        &format!("weather-{sfx}"),
        &["-p", "8080", "--link", &format!("redis-ambassador-{sfx}:redis"), weather_image.as_str()],
    )
    .unwrap();
    let weather_port = weather.host_port("8080/tcp").unwrap();

    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        if let Ok(response) = http.get(format!("http://127.0.0.1:{weather_port}/")).send().await {
            if response.status() == 200 {
                break response.text().await.unwrap().trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the weather app never served a reading\nweather:\n{}\nambassador:\n{}",
            weather.logs(),
            ambassador.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(served.starts_with("Ferrite City: "), "{served:?}");

    // The walkthrough's last step: redis-cli in the redis container.
    let output = Command::new("docker")
        .args(["exec", &redis.id, "/usr/bin/redis-cli", "get", "currentweather"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), served);

    // The app asked again serves the cached value.
    let again = http.get(format!("http://127.0.0.1:{weather_port}/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(again.trim(), served);

    // The registrator announces the weather app too (its image's name),
    // from Docker's start event: it may come after the app first answers.
    let weather_key = format!("{prefix}/weather-{sfx}/walk-{sfx}:weather-{sfx}:8080");
    let value = registered(&client, &weather_key, &registrator).await;
    assert_eq!(value, Some(format!("{gateway}:{weather_port}")));

    drop((weather, ambassador, redis, registrator));
}

/// Waits (up to 30 s) for the registrator to write `key`; its value.
async fn registered(client: &Client, key: &str, registrator: &Container) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(key, &GetOptions::default()).await {
            return response.event.node.value;
        }
        assert!(Instant::now() < deadline, "{key} was never registered:\n{}", registrator.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
