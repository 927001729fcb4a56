//! fleet's HTTP API v1 (`/fleet/v1`, also `/v1-alpha`), which fleetctl and
//! fleet's API clients use: units, unit states and machines, with fleet's
//! status codes, messages and paging.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::Deserialize;

use crate::job::Requirements;
use crate::page::PageToken;
use crate::registry::{JobRecord, Registry, RegistryError, TargetState, UnitStateRecord};
use crate::schema::{self, ErrorBody, ErrorDetail, Machine, MachinePage, Unit, UnitPage, UnitState, UnitStatePage};
use crate::unit_name;

/// What every answer's `Server` header says.
pub const SERVER: &str = concat!("fleetd/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
struct Api {
    registry: Registry,
    page_size: u16,
}

/// The API's routes, answering from `registry`; `page_size` is fleet's
/// `token_limit`.
pub fn router(registry: Registry, page_size: u16) -> Router {
    let api = Api { registry, page_size };
    let v1 = Router::new()
        .route("/units", any(units))
        .route("/units/{name}", any(unit))
        .route("/state", any(states))
        .route("/state/{name}", any(state))
        .route("/machines", any(machines))
        .route("/discovery", any(discovery))
        .with_state(api);
    Router::new()
        .nest("/fleet/v1", v1.clone())
        .nest("/v1-alpha", v1)
        .route("/", any(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "") }))
        .route("/fleet/v1", any(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "") }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "") })
        .layer(axum::middleware::map_response(|mut response: Response| async move {
            response.headers_mut().insert(header::SERVER, HeaderValue::from_static(SERVER));
            response
        }))
}

/// fleet's error body.
fn error(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: status.as_u16(), message: message.to_owned() } };
    json(status, &body)
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).expect("API entities always encode");
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn internal(e: RegistryError) -> Response {
    tracing::error!(error = %e, "registry request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "")
}

/// The query parameters the list routes read; each may repeat.
#[derive(Debug, Default)]
struct PageQuery {
    token: Vec<String>,
    machine_id: Vec<String>,
    unit_name: Vec<String>,
}

fn page_query(raw: Option<&str>) -> PageQuery {
    let mut query = PageQuery::default();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "nextPageToken" => query.token.push(value.into_owned()),
            "machineID" => query.machine_id.push(value.into_owned()),
            "unitName" => query.unit_name.push(value.into_owned()),
            _ => {}
        }
    }
    query
}

/// A request refused before it is served, with fleet's answer.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

/// The query and page token of a GET on a paged collection.
fn paged_get(method: &Method, uri: &axum::http::Uri, page_size: u16) -> Result<(PageQuery, PageToken), Refused> {
    only_get(method)?;
    let query = page_query(uri.query());
    let values: Vec<&str> = query.token.iter().map(String::as_str).collect();
    match PageToken::from_query(&values, page_size) {
        Ok(token) => Ok((query, token)),
        Err(e) => Err(Refused(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

fn only_get(method: &Method) -> Result<(), Refused> {
    if *method == Method::GET {
        Ok(())
    } else {
        Err(Refused(StatusCode::METHOD_NOT_ALLOWED, "only GET supported against this resource".into()))
    }
}

/// A job as the API shows it; `states` finds the state its target reports.
fn api_unit(job: &JobRecord, reported: &Reported<'_>, single: bool) -> Unit {
    let global = Requirements::of(&job.name, &job.unit).is_global();
    let (current, machine) = if global {
        (if single { String::new() } else { TargetState::Inactive.to_string() }, String::new())
    } else {
        (current_state(job, reported).to_string(), job.target.clone().unwrap_or_default())
    };
    Unit {
        current_state: current,
        desired_state: job.target_state.to_string(),
        machine_id: machine,
        name: job.name.clone(),
        options: schema::options(&job.unit),
    }
}

/// The (unit, machine) pairs some machine has reported a state for, built
/// once per answer so listing many units stays linear.
type Reported<'a> = std::collections::HashSet<(&'a str, &'a str)>;

fn reported(states: &[UnitStateRecord]) -> Reported<'_> {
    states.iter().map(|s| (s.name.as_str(), s.machine_id.as_str())).collect()
}

/// fleet's `determineJobState`: inactive until the target machine reports
/// the unit, launched once that machine started it, loaded otherwise.
fn current_state(job: &JobRecord, reported: &Reported<'_>) -> TargetState {
    let Some(target) = &job.target else { return TargetState::Inactive };
    if !reported.contains(&(job.name.as_str(), target.as_str())) {
        return TargetState::Inactive;
    }
    if job.job_state.as_ref() == Some(target) {
        TargetState::Launched
    } else {
        TargetState::Loaded
    }
}

fn api_state(state: &UnitStateRecord) -> UnitState {
    UnitState {
        hash: state.hash.clone(),
        machine_id: state.machine_id.clone(),
        name: state.name.clone(),
        systemd_active_state: state.active_state.clone(),
        systemd_load_state: state.load_state.clone(),
        systemd_sub_state: state.sub_state.clone(),
    }
}

async fn units(State(api): State<Api>, method: Method, uri: axum::http::Uri) -> Response {
    let (_, token) = match paged_get(&method, &uri, api.page_size) {
        Ok(paged) => paged,
        Err(refused) => return refused.into_response(),
    };
    let (jobs, states) = match tokio::try_join!(api.registry.jobs(), api.registry.unit_states()) {
        Ok(both) => both,
        Err(e) => return internal(e),
    };
    let reported = reported(&states);
    let all: Vec<Unit> = jobs.iter().map(|j| api_unit(j, &reported, false)).collect();
    let (page, next) = token.page(&all);
    json(
        StatusCode::OK,
        &UnitPage { next_page_token: next.map(|t| t.encode()).unwrap_or_default(), units: page.to_vec() },
    )
}

async fn unit(
    State(api): State<Api>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match method {
        Method::GET => match api.registry.job(&name).await {
            Ok(Some(job)) => match api.registry.unit_states().await {
                Ok(states) => json(StatusCode::OK, &api_unit(&job, &reported(&states), true)),
                Err(e) => internal(e),
            },
            Ok(None) => error(StatusCode::NOT_FOUND, "unit does not exist"),
            Err(e) => internal(e),
        },
        Method::DELETE => match api.registry.destroy_unit(&name).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(RegistryError::NoSuchJob) => error(StatusCode::NOT_FOUND, "unit does not exist"),
            Err(e) => internal(e),
        },
        Method::PUT => put_unit(&api, &name, &headers, &body).await,
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "only GET, PUT and DELETE supported against this resource"),
    }
}

/// fleet's `PUT /units/<name>`: create (with options), replace (options
/// with another hash) or change the desired state.
async fn put_unit(api: &Api, name: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let types: Vec<&HeaderValue> = headers.get_all(header::CONTENT_TYPE).iter().collect();
    if types.len() != 1 {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &format!("expected 1 Content-Type, got {}", types.len()));
    }
    let media = types[0].to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if media != "application/json" {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "only acceptable Content-Type is application/json");
    }
    let mut unit: Unit = match serde_json::from_slice(body) {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("unable to decode body: {e}")),
    };
    if unit.name.is_empty() {
        unit.name = name.to_owned();
    } else if unit.name != name {
        let message = format!("name in URL {name:?} differs from unit name in request body {:?}", unit.name);
        return error(StatusCode::BAD_REQUEST, &message);
    }
    if let Err(e) = unit_name::validate(name) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let existing = match api.registry.job(name).await {
        Ok(existing) => existing,
        Err(e) => return internal(e),
    };
    let desired = if unit.desired_state.is_empty() {
        None
    } else {
        match TargetState::parse(&unit.desired_state) {
            Ok(state) => Some(state),
            // fleet writes any string and breaks the unit; refuse instead.
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    };
    let file = schema::unit_file(&unit.options);
    match existing {
        None if unit.options.is_empty() => error(StatusCode::CONFLICT, "unit does not exist and options field empty"),
        None => {
            if let Err(e) = crate::unit_file::UnitFile::parse(&file.serialize()) {
                return error(StatusCode::BAD_REQUEST, &e.to_string());
            }
            if let Err(e) = Requirements::of("", &file).validate() {
                return error(StatusCode::BAD_REQUEST, &e.to_string());
            }
            create(api, name, &file, desired).await
        }
        Some(job) if !unit.options.is_empty() && file.hash() != job.hash => create(api, name, &file, desired).await,
        Some(_) => {
            let Some(desired) = desired else {
                return error(StatusCode::CONFLICT, "must provide DesiredState to update existing unit");
            };
            let template = unit_name::NameInfo::parse(name).is_some_and(|n| n.is_template());
            if template && desired != TargetState::Inactive {
                return error(StatusCode::BAD_REQUEST, &format!("cannot activate template {name:?}"));
            }
            match api.registry.set_target_state(name, desired).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => internal(e),
            }
        }
    }
}

async fn create(api: &Api, name: &str, file: &crate::unit_file::UnitFile, desired: Option<TargetState>) -> Response {
    match api.registry.create_unit(name, file, desired.unwrap_or(TargetState::Inactive)).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => internal(e),
    }
}

async fn states(State(api): State<Api>, method: Method, uri: axum::http::Uri) -> Response {
    let (query, token) = match paged_get(&method, &uri, api.page_size) {
        Ok(paged) => paged,
        Err(refused) => return refused.into_response(),
    };
    let all = match api.registry.unit_states().await {
        Ok(states) => states,
        Err(e) => return internal(e),
    };
    let filtered: Vec<UnitState> = all
        .iter()
        .filter(|s| query.machine_id.first().is_none_or(|m| &s.machine_id == m))
        .filter(|s| query.unit_name.first().is_none_or(|n| &s.name == n))
        .map(api_state)
        .collect();
    let (page, next) = token.page(&filtered);
    let body = UnitStatePage { next_page_token: next.map(|t| t.encode()).unwrap_or_default(), states: page.to_vec() };
    json(StatusCode::OK, &body)
}

async fn state(State(api): State<Api>, Path(name): Path<String>, method: Method) -> Response {
    if let Err(refused) = only_get(&method) {
        return refused.into_response();
    }
    match api.registry.unit_states().await {
        Ok(states) => match states.iter().find(|s| s.name == name) {
            Some(s) => json(StatusCode::OK, &api_state(s)),
            // fleet's handler crashes here; a 404 is what it meant.
            None => error(StatusCode::NOT_FOUND, "unit state does not exist"),
        },
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct PatchOp {
    #[serde(alias = "Op", alias = "OP")]
    op: String,
    #[serde(alias = "Path", alias = "PATH")]
    path: String,
    #[serde(default, alias = "Value", alias = "VALUE")]
    value: PatchValue,
}

#[derive(Debug, Default, Deserialize)]
struct PatchValue {
    #[serde(default, alias = "Value", alias = "VALUE")]
    value: String,
}

async fn machines(State(api): State<Api>, method: Method, uri: axum::http::Uri, body: Bytes) -> Response {
    match method {
        Method::GET => {
            let (_, token) = match paged_get(&method, &uri, api.page_size) {
                Ok(paged) => paged,
                Err(refused) => return refused.into_response(),
            };
            let all: Vec<Machine> = match api.registry.machines().await {
                Ok(machines) => machines
                    .into_iter()
                    .map(|m| Machine { id: m.id, metadata: m.metadata, primary_ip: m.public_ip })
                    .collect(),
                Err(e) => return internal(e),
            };
            let (page, next) = token.page(&all);
            let body =
                MachinePage { machines: page.to_vec(), next_page_token: next.map(|t| t.encode()).unwrap_or_default() };
            json(StatusCode::OK, &body)
        }
        Method::PATCH => patch_machines(&api, &body).await,
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "only GET and PATCH supported against this resource"),
    }
}

/// fleet's metadata JSON patch: every operation is checked before any is
/// applied.
async fn patch_machines(api: &Api, body: &[u8]) -> Response {
    let ops: Vec<PatchOp> = match serde_json::from_slice(body) {
        Ok(ops) => ops,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mut changes: Vec<(String, String, Option<String>)> = Vec::new();
    for op in &ops {
        if !matches!(op.op.as_str(), "add" | "remove" | "replace") {
            return error(StatusCode::BAD_REQUEST, "invalid op: expect add, remove, or replace");
        }
        let Some((machine, key)) = metadata_path(&op.path) else {
            return error(StatusCode::BAD_REQUEST, "machine metadata path invalid");
        };
        if op.op != "remove" && op.value.value.is_empty() {
            return error(StatusCode::BAD_REQUEST, "invalid value: add and replace require a value");
        }
        let value = (op.op != "remove").then(|| op.value.value.clone());
        changes.push((machine, key, value));
    }
    for (machine, key, value) in changes {
        if let Err(e) = api.registry.set_machine_metadata(&machine, &key, value.as_deref()).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    }
    (StatusCode::NO_CONTENT, [(header::CONTENT_TYPE, "application/json")]).into_response()
}

/// `/<machine>/metadata/<key>`, the key of letters, digits, `_`, `.`, `-`.
fn metadata_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix('/')?;
    let (machine, key) = rest.split_once("/metadata/")?;
    let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    (!machine.is_empty() && !machine.contains('/') && key_ok).then(|| (machine.to_owned(), key.to_owned()))
}

async fn discovery(method: Method) -> Response {
    if method != Method::GET {
        return error(StatusCode::BAD_REQUEST, "only HTTP GET supported against this resource");
    }
    json(StatusCode::OK, &discovery_document())
}

/// A discovery document naming the API's resources and methods, in the
/// shape of Google's discovery format that fleet's clients were generated
/// from.
fn discovery_document() -> serde_json::Value {
    let method = |id: &str, path: &str, http: &str| serde_json::json!({"id": id, "path": path, "httpMethod": http});
    serde_json::json!({
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "fleet:v1",
        "name": "fleet",
        "version": "v1",
        "title": "fleet API",
        "protocol": "rest",
        "rootUrl": "$ENDPOINT/",
        "servicePath": "fleet/v1/",
        "resources": {
            "Machines": {"methods": {"List": method("fleet.Machine.List", "machines", "GET")}},
            "Units": {"methods": {
                "List": method("fleet.Unit.List", "units", "GET"),
                "Get": method("fleet.Unit.Get", "units/{unitName}", "GET"),
                "Delete": method("fleet.Unit.Delete", "units/{unitName}", "DELETE"),
                "Set": method("fleet.Unit.Set", "units/{unitName}", "PUT"),
            }},
            "UnitState": {"methods": {
                "List": method("fleet.UnitState.List", "state", "GET"),
                "Get": method("fleet.UnitState.Get", "state/{unitName}", "GET"),
            }},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_paths() {
        assert_eq!(metadata_path("/m1/metadata/foo"), Some(("m1".into(), "foo".into())));
        assert_eq!(metadata_path("/m1/metadata/a.b-c_d"), Some(("m1".into(), "a.b-c_d".into())));
        for bad in
            ["/m1/foo", "m1/metadata/foo", "/m1/metadata/", "/m1/metadata/a/b", "//metadata/x", "/m1/metadata/a b"]
        {
            assert_eq!(metadata_path(bad), None, "{bad}");
        }
    }
}
