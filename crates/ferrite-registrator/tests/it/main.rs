//! Tier 1 of ferrite-registrator: real `docker inspect` answers (captured
//! from Docker 20.10 on this machine, in `tests/fixtures/`) turned into
//! the keys and values registrator would write.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use ferrite_registrator::service::{services, Service, Settings};

fn fixture(name: &str) -> ContainerInspectResponse {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn settings() -> Settings {
    Settings { hostname: "host1".into(), hostname_ip: Some("10.0.0.9".into()), ..Settings::default() }
}

/// (key, value) pairs as they land in the store under `/services`.
fn entries(found: &[Service]) -> Vec<(String, String)> {
    found.iter().map(|s| (s.key("/services"), s.value())).collect()
}

#[test]
fn a_published_port_is_registered_under_the_image_name_at_the_hosts_address() {
    let found = services(&fixture("redis"), &settings());
    assert_eq!(entries(&found), [("/services/redis/host1:sk-fix-redis:6379".to_owned(), "10.0.0.9:32768".to_owned())]);
    let service = &found[0];
    assert_eq!(service.tags, ["cache", "primary"], "SERVICE_TAGS");
    assert_eq!(service.attrs, BTreeMap::from([("check_tcp".to_owned(), "true".to_owned())]), "a label attribute");
    assert_eq!(service.container_name, "sk-fix-redis");
    assert!(service.container_id.starts_with(&service.container_id[..12]));
    assert_eq!(service.ttl, None);
}

#[test]
fn the_ip_flag_overrides_the_address_and_ttl_is_carried() {
    let settings = Settings { host_ip: Some("192.168.1.5".into()), ttl: Some(Duration::from_secs(30)), ..settings() };
    let found = services(&fixture("redis"), &settings);
    assert_eq!(entries(&found)[0].1, "192.168.1.5:32768");
    assert_eq!(found[0].ttl, Some(Duration::from_secs(30)));
}

#[test]
fn internal_registers_the_container_ip_and_exposed_port() {
    let settings = Settings { internal: true, ..settings() };
    assert_eq!(
        entries(&services(&fixture("redis"), &settings)),
        [("/services/redis/host1:sk-fix-redis:6379".to_owned(), "172.17.0.2:6379".to_owned())]
    );
}

#[test]
fn several_ports_get_port_suffixes_unless_named_per_port_and_udp_is_marked() {
    let found = services(&fixture("multi"), &settings());
    // 9999 is exposed but not published: skipped.
    assert_eq!(
        entries(&found),
        [
            ("/services/multi-53/host1:sk-fix-multi:53:udp".to_owned(), "127.0.0.1:5353".to_owned()),
            ("/services/store/host1:sk-fix-multi:6379".to_owned(), "10.0.0.9:32769".to_owned()),
        ]
    );
    assert_eq!(found[0].tags, ["udp"]);
    assert!(found[1].tags.is_empty());

    let internal = Settings { internal: true, ..settings() };
    assert_eq!(
        entries(&services(&fixture("multi"), &internal)),
        [
            ("/services/multi-53/host1:sk-fix-multi:53:udp".to_owned(), "172.17.0.3:53".to_owned()),
            ("/services/store/host1:sk-fix-multi:6379".to_owned(), "172.17.0.3:6379".to_owned()),
            ("/services/multi-9999/host1:sk-fix-multi:9999".to_owned(), "172.17.0.3:9999".to_owned()),
        ]
    );
}

#[test]
fn service_ignore_skips_the_container() {
    assert!(services(&fixture("ignored"), &settings()).is_empty());
}

#[test]
fn explicit_registers_only_named_services() {
    let explicit = Settings { explicit: true, ..settings() };
    assert!(services(&fixture("redis"), &explicit).is_empty());
    assert_eq!(services(&fixture("multi"), &explicit).len(), 2);
}

#[test]
fn forced_tags_are_added_after_the_containers_own() {
    let tagged = Settings { force_tags: "dc1,rack\\,2".into(), ..settings() };
    assert_eq!(services(&fixture("redis"), &tagged)[0].tags, ["cache", "primary", "dc1", "rack,2"]);
}

#[test]
fn host_networking_registers_exposed_ports_as_published_on_the_host() {
    assert_eq!(
        entries(&services(&fixture("host"), &settings())),
        [("/services/redis/host1:sk-fix-host:6379".to_owned(), "10.0.0.9:6379".to_owned())]
    );
}

#[test]
fn without_a_resolvable_hostname_the_binding_address_stays() {
    let unresolved = Settings { hostname_ip: None, ..settings() };
    assert_eq!(entries(&services(&fixture("redis"), &unresolved))[0].1, "0.0.0.0:32768");
}
