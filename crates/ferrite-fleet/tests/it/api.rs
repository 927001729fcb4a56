//! fleet's HTTP API v1 over a real store: the answers of fleet's own
//! examples (status, body, headers).

use ferrite_fleet::api;
use ferrite_fleet::registry::{MachineState, Registry, UnitStateRecord};
use reqwest::StatusCode;
use serde_json::{json, Value};

use ferrite_store::testing::OneMember as Store;

struct Served {
    base: String,
    registry: Registry,
    http: reqwest::Client,
    _store: Store,
}

async fn serve(page_size: u16) -> Served {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet/");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/fleet/v1", listener.local_addr().unwrap());
    let app = api::router(registry.clone(), page_size);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served { base, registry, http: reqwest::Client::new(), _store: store }
}

impl Served {
    async fn put(&self, path: &str, body: Value) -> (StatusCode, String) {
        let response = self.http.put(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        assert_eq!(response.headers()["server"], api::SERVER);
        (response.status(), response.text().await.unwrap())
    }
}

fn err(code: u16, message: &str) -> String {
    json!({"error": {"code": code, "message": message}}).to_string()
}

#[tokio::test]
async fn units_are_created_updated_listed_and_deleted() {
    let s = serve(100).await;
    let options = json!([{"section": "Service", "name": "ExecStart", "value": "/usr/bin/sleep 3000"}]);
    let (status, body) = s.put("/units/foo.service", json!({"desiredState": "launched", "options": options})).await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, ""));

    let (status, _) = s.put("/units/foo.service", json!({"desiredState": "loaded"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, body) = s.put("/units/foo.service", json!({"name": "bar.service", "desiredState": "loaded"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, err(400, "name in URL \"foo.service\" differs from unit name in request body \"bar.service\""));

    let (status, body) = s.put("/units/nope.service", json!({"desiredState": "loaded"})).await;
    assert_eq!((status, body), (StatusCode::CONFLICT, err(409, "unit does not exist and options field empty")));

    let (status, body) = s.put("/units/foo.service", json!({})).await;
    assert_eq!((status, body), (StatusCode::CONFLICT, err(409, "must provide DesiredState to update existing unit")));

    let (status, body) = s.put("/units/bad", json!({"options": options})).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, err(400, "unit name must contain \".\"")));

    let conflicting = json!([{"section": "X-Fleet", "name": "MachineID", "value": "abc"}, {"section": "X-Fleet", "name": "Global", "value": "true"}]);
    let (status, body) = s.put("/units/x.service", json!({"options": conflicting})).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, err(400, "MachineID cannot be used with Global")));

    s.put("/units/tpl@.service", json!({"options": options})).await;
    let (status, body) = s.put("/units/tpl@.service", json!({"desiredState": "launched"})).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, err(400, "cannot activate template \"tpl@.service\"")));

    let response = s
        .http
        .put(format!("{}/units/foo.service", s.base))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(response.text().await.unwrap(), err(415, "only acceptable Content-Type is application/json"));

    let (status, body) = s.get("/units/foo.service").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"currentState":"inactive","desiredState":"loaded","name":"foo.service","options":[{"name":"ExecStart","section":"Service","value":"/usr/bin/sleep 3000"}]}"#
    );

    // Scheduled and reported by its machine, it is loaded there.
    s.registry.schedule("foo.service", "m1").await.unwrap();
    let state = UnitStateRecord {
        name: "foo.service".into(),
        machine_id: "m1".into(),
        load_state: "loaded".into(),
        active_state: "inactive".into(),
        sub_state: "dead".into(),
        hash: "x".into(),
    };
    s.registry.put_unit_state(&state).await.unwrap();
    let (_, body) = s.get("/units").await;
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["units"][0]["currentState"], "loaded");
    assert_eq!(listed["units"][0]["machineID"], "m1");
    assert_eq!(listed["units"][1]["name"], "tpl@.service");

    let (status, body) = s.get("/state?unitName=foo.service").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"states":[{"hash":"x","machineID":"m1","name":"foo.service","systemdActiveState":"inactive","systemdLoadState":"loaded","systemdSubState":"dead"}]}"#
    );
    let (_, body) = s.get("/state?machineID=m2").await;
    assert_eq!(body, "{}");

    let response = s.http.delete(format!("{}/units/foo.service", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = s.http.delete(format!("{}/units/foo.service", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.text().await.unwrap(), err(404, "unit does not exist"));
}

#[tokio::test]
async fn routes_methods_and_page_tokens() {
    let s = serve(2).await;
    let (status, body) = s.get("/units/").await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, err(404, "")));
    let response = s.http.post(format!("{}/units", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.text().await.unwrap(), err(405, "only GET supported against this resource"));

    let options = json!([{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]);
    for name in ["a", "b", "c"] {
        s.put(&format!("/units/{name}.service"), json!({"options": options})).await;
    }
    let (_, body) = s.get("/units").await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["units"].as_array().unwrap().len(), 2);
    let token = page["nextPageToken"].as_str().unwrap().to_owned();
    let (_, body) = s.get(&format!("/units?nextPageToken={token}")).await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["units"][0]["name"], "c.service");
    assert!(page.get("nextPageToken").is_none());

    let (status, body) = s.get("/machines?nextPageToken=EwBMLg==").await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, err(400, "token limit must be 2")));
}

#[tokio::test]
async fn machine_metadata_is_patched_all_or_nothing() {
    let s = serve(100).await;
    let m1 = MachineState {
        id: "m1".into(),
        public_ip: "10.0.0.1".into(),
        metadata: [("hostname".to_owned(), "one".to_owned())].into(),
        ..MachineState::default()
    };
    s.registry.put_machine(&m1, std::time::Duration::from_secs(30), true).await.unwrap();

    let patch = |body: Value| {
        let http = s.http.clone();
        let url = format!("{}/machines", s.base);
        async move { http.patch(url).json(&body).send().await.unwrap() }
    };
    let response = patch(json!([{"op": "add", "path": "/m1/metadata/foo", "Value": {"value": "bar"}}])).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["content-type"], "application/json");
    let (_, body) = s.get("/machines").await;
    assert_eq!(body, r#"{"machines":[{"id":"m1","metadata":{"foo":"bar","hostname":"one"},"primaryIP":"10.0.0.1"}]}"#);

    // A bad operation anywhere in the list changes nothing.
    let response = patch(json!([
        {"op": "remove", "path": "/m1/metadata/foo"},
        {"op": "noop", "path": "/m1/metadata/foo"}
    ]))
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.text().await.unwrap(), err(400, "invalid op: expect add, remove, or replace"));
    let response = patch(json!([{"op": "add", "path": "/m1/foo", "value": {"value": "x"}}])).await;
    assert_eq!(response.text().await.unwrap(), err(400, "machine metadata path invalid"));
    let response = patch(json!([{"op": "add", "path": "/m1/metadata/foo"}])).await;
    assert_eq!(response.text().await.unwrap(), err(400, "invalid value: add and replace require a value"));
    let (_, body) = s.get("/machines").await;
    assert!(body.contains(r#""foo":"bar""#), "{body}");

    let response = patch(json!([{"op": "remove", "path": "/m1/metadata/foo"}])).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, body) = s.get("/machines").await;
    assert_eq!(body, r#"{"machines":[{"id":"m1","metadata":{"hostname":"one"},"primaryIP":"10.0.0.1"}]}"#);
}
