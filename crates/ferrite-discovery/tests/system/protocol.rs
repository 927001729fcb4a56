//! The HTTP protocol of discovery.etcd.io, as members and operators see it.

use std::time::Duration;

use ferrite_etcd_api::v2::{Action, Event};
use ferrite_etcd_client::GetOptions;

use crate::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tokens_and_the_proxied_keys_api() {
    let service = Service::start().await;
    let http = &service.http;

    // /new without a size makes a 3-member token at <host>/<32 hex>.
    let token_url = http.get(format!("{}/new", service.url)).send().await.unwrap().text().await.unwrap();
    let token = token_url.strip_prefix(&format!("{}/", service.url)).unwrap_or_else(|| panic!("{token_url}"));
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

    // The size is in the backing store, where the service keeps all state.
    let stored =
        service.store().get(&format!("/_etcd/registry/{token}/_config/size"), &GetOptions::default()).await.unwrap();
    assert_eq!(stored.node().value.as_deref(), Some("3"));

    // ... and readable through the service, as etcd's own answer.
    let size = http.get(format!("{token_url}/_config/size")).send().await.unwrap();
    assert_eq!(size.status(), 200);
    assert!(size.headers().contains_key("x-etcd-index"));
    let size: Event = size.json().await.unwrap();
    assert_eq!(size.node.key, format!("/_etcd/registry/{token}/_config/size"));
    assert_eq!(size.node.value.as_deref(), Some("3"));

    for path in [token_url.clone(), format!("{token_url}/")] {
        let dir: Event = http.get(&path).send().await.unwrap().json().await.unwrap();
        assert_eq!(dir.node.key, format!("/_etcd/registry/{token}"));
        assert!(dir.node.dir);
        assert!(dir.node.nodes.is_none(), "_config is hidden: {:?}", dir.node);
    }

    // A member registers as etcd does: PUT, create-only, form body.
    let put = http
        .put(format!("{token_url}/8e9e05c52164694d?prevExist=false"))
        .form(&[("value", "n1=http://127.0.0.1:2380")])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let again = http
        .put(format!("{token_url}/8e9e05c52164694d?prevExist=false"))
        .form(&[("value", "n1=http://127.0.0.1:2380")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 412, "etcd's NodeExist passes through");
    let err: ferrite_etcd_api::v2::Error = again.json().await.unwrap();
    assert_eq!(err.error_code, 105);

    // A watch through the service waits, and its answer streams back.
    let watcher = {
        let http = http.clone();
        let url = format!("{token_url}?wait=true&recursive=true");
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Event>().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watcher.is_finished(), "the watch waits");
    http.put(format!("{token_url}/2?prevExist=false"))
        .form(&[("value", "n2=http://127.0.0.1:2381")])
        .send()
        .await
        .unwrap();
    let seen =
        tokio::time::timeout(Duration::from_secs(5), watcher).await.expect("the watch answers").unwrap().unwrap();
    assert_eq!(seen.action, Action::Create);
    assert_eq!(seen.node.key, format!("/_etcd/registry/{token}/2"));

    // DELETE of a machine key is allowed.
    let deleted = http.delete(format!("{token_url}/2")).send().await.unwrap();
    assert_eq!(deleted.status(), 200);

    // Explicit sizes, and Go's error text for a bad one.
    let five = service.new_token(5).await;
    let five: Event = http.get(format!("{five}/_config/size")).send().await.unwrap().json().await.unwrap();
    assert_eq!(five.node.value.as_deref(), Some("5"));
    let bad = http.get(format!("{}/new?size=abc", service.url)).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.text().await.unwrap(), "strconv.Atoi: parsing \"abc\": invalid syntax\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_methods_are_discovery_etcd_ios() {
    let service = Service::start().await;
    let http = &service.http;
    let token_url = service.new_token(3).await;
    let status = |r: reqwest::Response| r.status().as_u16();

    assert_eq!(status(http.post(&token_url).send().await.unwrap()), 405);
    assert_eq!(status(http.delete(&token_url).send().await.unwrap()), 405);
    assert_eq!(
        status(http.put(format!("{token_url}/_config/size")).send().await.unwrap()),
        405,
        "the size is read-only"
    );
    assert_eq!(status(http.get(format!("{token_url}/a/b")).send().await.unwrap()), 404);
    assert_eq!(status(http.get(format!("{}/not-a-token", service.url)).send().await.unwrap()), 404);
    // A well-formed token that was never made: etcd's KeyNotFound.
    let unknown = http.get(format!("{}/{}", service.url, "0".repeat(32))).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let err: ferrite_etcd_api::v2::Error = unknown.json().await.unwrap();
    assert_eq!(err.error_code, 100);

    let health = http.get(format!("{}/health", service.url)).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "OK");
    // The health check cleans up after itself: only the tokens made above
    // remain.
    let registry = service.store().get("/_etcd/registry", &GetOptions::default()).await.unwrap();
    assert_eq!(registry.node().nodes.as_ref().map_or(0, Vec::len), 1);
}
