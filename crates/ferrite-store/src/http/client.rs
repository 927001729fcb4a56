//! The client API: `/v2/keys`, `/v2/members`, `/v2/machines`,
//! `/v2/stats/*`, `/version`, `/health` and `/metrics`, routed the way Go's
//! `ServeMux` routes etcd's handlers (exact and subtree patterns, redirects
//! of unclean paths, plain-text 404s).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use ferrite_etcd_api::v2;
use futures::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use openraft::ServerState;

use super::form::{mux_redirect, path_unescape, Form};
use super::keys_request::{self, KeysOp, KeysRequest};
use super::{
    go_duration, go_error, go_json, go_json_error, go_json_line, go_new_urls, http_error, method_not_allowed, respond,
    JSON, TEXT,
};
use crate::node::{unix_nanos, MemberError, Node, NodeError};
use crate::raft::types::{Request as RaftRequest, Response as RaftResponse};

/// The largest form body Go's `ParseForm` reads (10 MiB).
const MAX_FORM_BODY: usize = 10 << 20;

/// The client API router.
pub fn router(node: Arc<Node>) -> Router {
    Router::new().fallback(serve).with_state(node)
}

async fn serve(State(node): State<Arc<Node>>, req: Request) -> Response {
    let mut resp = route(node, req).await;
    let headers = resp.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert("access-control-allow-methods", HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"));
    headers.insert("access-control-allow-headers", HeaderValue::from_static("accept, content-type, authorization"));
    resp
}

async fn route(node: Arc<Node>, req: Request) -> Response {
    if req.method() == Method::OPTIONS {
        return Response::new(Body::empty());
    }
    let raw_path = req.uri().path().to_owned();
    let path = match path_unescape(&raw_path) {
        Ok(p) => p,
        Err(_) => return go_error(StatusCode::BAD_REQUEST, "400 Bad Request"),
    };
    if let Some(clean) = mux_redirect(&path) {
        let location = match req.uri().query() {
            Some(q) if !q.is_empty() => format!("{clean}?{q}"),
            _ => clean,
        };
        return redirect(req.method(), &location);
    }
    match path.as_str() {
        "/v2/keys" => keys(node, req, String::new()).await,
        p if p.starts_with("/v2/keys/") => {
            let key = p["/v2/keys".len()..].to_owned();
            keys(node, req, key).await
        }
        "/v2/members" => members(node, req, String::new()).await,
        p if p.starts_with("/v2/members/") => {
            let rest = p["/v2/members/".len()..].to_owned();
            members(node, req, rest).await
        }
        "/v2/machines" => machines(&node, req.method()),
        "/v2/stats/store" => stats_store(&node, req.method()),
        "/v2/stats/self" => stats_self(&node, req.method()),
        "/v2/stats/leader" => stats_leader(&node, req.method()),
        "/version" => version(req.method()),
        "/health" if req.method() != Method::GET => method_not_allowed("GET"),
        "/health" => health(&node).await,
        "/v2/auth/users" => auth_users(&node, req.method()),
        "/v2/auth/enable" => auth_enable(&node, req.method()),
        "/metrics" => metrics(&node),
        _ => go_error(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Go's `http.Redirect` with 301, as `ServeMux` answers unclean paths.
fn redirect(method: &Method, location: &str) -> Response {
    let mut resp = if method == Method::GET {
        let body = format!("<a href=\"{}\">Moved Permanently</a>.\n\n", html_escape(location));
        respond(StatusCode::MOVED_PERMANENTLY, "text/html; charset=utf-8", body)
    } else {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if method == Method::HEAD {
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        }
        r
    };
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&#34;").replace('\'', "&#39;")
}

fn cluster_id_header(node: &Node, headers: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&v2::format_id(node.cluster_id)) {
        headers.insert("x-etcd-cluster-id", v);
    }
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: u64) {
    headers.insert(name, HeaderValue::from(value));
}

/// etcd's `v2error.Error.WriteTo`.
fn key_error(node: &Node, err: &v2::Error) -> Response {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = respond(status, JSON, go_json_line(err));
    set_header(resp.headers_mut(), "x-etcd-index", err.index);
    cluster_id_header(node, resp.headers_mut());
    resp
}

fn node_error(node: &Node, err: &NodeError) -> Response {
    key_error(node, &v2::Error::new(v2::ErrorCode::RaftInternal, err.to_string(), 0))
}

/// Reads a form body when Go's `ParseForm` would: PUT, POST or PATCH with
/// a url-encoded content type.
async fn form_of(req: Request) -> Result<Form, v2::Error> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        .unwrap_or(false);
    let reads_body = matches!(parts.method, Method::PUT | Method::POST | Method::PATCH) && is_form;
    let body = if reads_body {
        match axum::body::to_bytes(body, MAX_FORM_BODY).await {
            Ok(b) => Some(b),
            Err(_) => return Err(v2::Error::new(v2::ErrorCode::InvalidForm, "http: POST too large", 0)),
        }
    } else {
        None
    };
    Form::parse(body.as_deref(), &query).map_err(|e| v2::Error::new(v2::ErrorCode::InvalidForm, e.to_string(), 0))
}

async fn keys(node: Arc<Node>, req: Request, key: String) -> Response {
    let method = req.method().clone();
    if !matches!(method, Method::HEAD | Method::GET | Method::PUT | Method::POST | Method::DELETE) {
        return method_not_allowed("HEAD,GET,PUT,POST,DELETE");
    }
    let form = match form_of(req).await {
        Ok(f) => f,
        Err(e) => return key_error(&node, &e),
    };
    let now = unix_nanos(SystemTime::now());
    let KeysRequest { op, no_value_on_success } = match keys_request::parse(&method, &key, &form, now) {
        Ok(r) => r,
        Err(e) => return key_error(&node, &e),
    };
    match op {
        KeysOp::Get { key, recursive, sorted } => {
            let result = node.state.with_store(|s| s.get(&key, recursive, sorted, now));
            key_result(&node, result, false)
        }
        KeysOp::QuorumGet { key, recursive, sorted } => {
            if let Err(e) = node.read_barrier().await {
                return node_error(&node, &e);
            }
            let now = unix_nanos(SystemTime::now());
            let result = node.state.with_store(|s| s.get(&key, recursive, sorted, now));
            key_result(&node, result, false)
        }
        KeysOp::Watch { key, recursive, stream, since } => watch(&node, &key, recursive, stream, since),
        KeysOp::Write(command) => match node.propose(RaftRequest::Keys(command)).await {
            Ok(proposed) => match proposed.response {
                RaftResponse::Keys(result) => key_result(&node, result, no_value_on_success),
                RaftResponse::Done | RaftResponse::Batch(_) => {
                    node_error(&node, &NodeError::Internal("a keys write applied with no answer".into()))
                }
            },
            Err(e) => node_error(&node, &e),
        },
    }
}

fn key_result(node: &Node, result: Result<crate::v2store::Applied, v2::Error>, no_value_on_success: bool) -> Response {
    let applied = match result {
        Ok(a) => a,
        Err(e) => return key_error(node, &e),
    };
    let event = &applied.event;
    let created = event.action == v2::Action::Create || (event.action == v2::Action::Set && event.prev_node.is_none());
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let hides_nodes = no_value_on_success
        && matches!(
            event.action,
            v2::Action::Set | v2::Action::CompareAndSwap | v2::Action::Create | v2::Action::Update
        );
    let body = if hides_nodes {
        go_json_line(&serde_json::json!({ "action": event.action.as_str() }))
    } else {
        go_json_line(event)
    };
    let mut resp = respond(status, JSON, body);
    let (raft_index, raft_term) = node.raft_status();
    let headers = resp.headers_mut();
    cluster_id_header(node, headers);
    set_header(headers, "x-etcd-index", applied.etcd_index);
    set_header(headers, "x-raft-index", raft_index);
    set_header(headers, "x-raft-term", raft_term);
    resp
}

fn watch(node: &Node, key: &str, recursive: bool, stream: bool, since: u64) -> Response {
    let watcher = match node.state.with_store(|s| s.watch(key, recursive, stream, since)) {
        Ok(w) => w,
        Err(e) => return key_error(node, &e),
    };
    let start_index = watcher.start_index;
    let events = tokio_stream::wrappers::ReceiverStream::new(watcher.events);
    let events = events.map(|event| Ok::<Bytes, std::convert::Infallible>(Bytes::from(go_json_line(&event))));
    let body = if stream { Body::from_stream(events) } else { Body::from_stream(events.take(1)) };
    let mut resp = respond(StatusCode::OK, JSON, body);
    let (raft_index, raft_term) = node.raft_status();
    let headers = resp.headers_mut();
    cluster_id_header(node, headers);
    set_header(headers, "x-etcd-index", start_index);
    set_header(headers, "x-raft-index", raft_index);
    set_header(headers, "x-raft-term", raft_term);
    resp
}

async fn members(node: Arc<Node>, req: Request, rest: String) -> Response {
    let method = req.method().clone();
    if !matches!(method, Method::GET | Method::POST | Method::DELETE | Method::PUT) {
        return method_not_allowed("GET,POST,DELETE,PUT");
    }
    let mut resp = members_answer(&node, req, method, rest).await;
    cluster_id_header(&node, resp.headers_mut());
    resp
}

async fn members_answer(node: &Node, req: Request, method: Method, rest: String) -> Response {
    match method {
        Method::GET => match rest.trim_start_matches('/') {
            "" => respond(StatusCode::OK, JSON, go_json_line(&v2::MemberList { members: node.members() })),
            "leader" => match node.leader().and_then(|l| node.members().into_iter().find(|m| m.id == v2::format_id(l)))
            {
                Some(m) => respond(StatusCode::OK, JSON, go_json_line(&m)),
                None => http_error(StatusCode::SERVICE_UNAVAILABLE, "During election"),
            },
            _ => http_error(StatusCode::NOT_FOUND, "Not found"),
        },
        Method::POST => match member_request(req).await {
            Err(resp) => resp,
            Ok(create) => match node.add_member(create.peer_urls).await {
                Ok(member) => respond(StatusCode::CREATED, JSON, go_json_line(&member)),
                Err(e) => member_error(&e),
            },
        },
        _ => {
            let id_text = rest.trim_start_matches('/');
            if id_text.is_empty() {
                return go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            }
            let Some(id) = v2::parse_id(id_text) else {
                return http_error(StatusCode::NOT_FOUND, &format!("No such member: {id_text}"));
            };
            if method == Method::DELETE {
                match node.remove_member(id).await {
                    Ok(()) => no_content(),
                    Err(e) => member_error(&e),
                }
            } else {
                match member_request(req).await {
                    Err(resp) => resp,
                    Ok(update) => match node.update_member(id, update.peer_urls).await {
                        Ok(()) => no_content(),
                        Err(e) => member_error(&e),
                    },
                }
            }
        }
    }
}

fn no_content() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

async fn member_request(req: Request) -> Result<v2::MemberCreateRequest, Response> {
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let ctype = match ctype.split_once(';') {
        Some((t, _)) => t.trim().to_ascii_lowercase(),
        None => ctype,
    };
    if ctype != "application/json" {
        return Err(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Bad Content-Type {ctype}, accept application/json"),
        ));
    }
    let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BODY)
        .await
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let mut create: v2::MemberCreateRequest =
        serde_json::from_slice(&body).map_err(|e| http_error(StatusCode::BAD_REQUEST, &go_json_error(&body, &e)))?;
    create.peer_urls = go_new_urls(&create.peer_urls).map_err(|e| http_error(StatusCode::BAD_REQUEST, &e))?;
    Ok(create)
}

fn member_error(e: &MemberError) -> Response {
    match e {
        MemberError::PeerUrlExists | MemberError::IdExists => http_error(StatusCode::CONFLICT, &e.to_string()),
        MemberError::NotFound(_) => http_error(StatusCode::NOT_FOUND, &e.to_string()),
        MemberError::Node(inner) => http_error(StatusCode::INTERNAL_SERVER_ERROR, &inner.to_string()),
    }
}

fn machines(node: &Node, method: &Method) -> Response {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return method_not_allowed("GET,HEAD");
    }
    let urls: Vec<String> = node.members().into_iter().flat_map(|m| m.client_urls).collect();
    respond(StatusCode::OK, TEXT, urls.join(", "))
}

fn stats_store(node: &Node, method: &Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let stats = node.state.with_store(|s| s.stats_json());
    respond(StatusCode::OK, JSON, go_json(&stats))
}

fn rfc3339(t: SystemTime) -> String {
    v2::format_time(unix_nanos(t))
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "StateLeader",
        ServerState::Candidate => "StateCandidate",
        ServerState::Follower | ServerState::Learner | ServerState::Shutdown => "StateFollower",
    }
}

fn stats_self(node: &Node, method: &Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let leader = node.leader();
    let uptime = node.started.elapsed().unwrap_or_default();
    let body = serde_json::json!({
        "name": node.name,
        "id": v2::format_id(node.id),
        "state": state_name(node.server_state()),
        "startTime": rfc3339(node.started),
        "leaderInfo": {
            "leader": leader.map(v2::format_id).unwrap_or_default(),
            "uptime": go_duration(uptime),
            "startTime": rfc3339(node.started),
        },
        "recvAppendRequestCnt": node.counters.recv_append.load(Ordering::Relaxed),
        "sendAppendRequestCnt": node.peer_stats.sent(),
    });
    respond(StatusCode::OK, JSON, go_json(&body))
}

fn stats_leader(node: &Node, method: &Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    if node.leader() != Some(node.id) {
        return http_error(StatusCode::FORBIDDEN, "not current leader");
    }
    let stats = node.peer_stats.snapshot();
    let mut followers = serde_json::Map::new();
    for id in node.raft_members().keys().filter(|id| **id != node.id) {
        let f = stats.get(id).copied().unwrap_or_default();
        followers.insert(
            v2::format_id(*id),
            serde_json::json!({
                "latency": {
                    "current": f.current_ms,
                    "average": f.average_ms(),
                    "standardDeviation": f.standard_deviation_ms(),
                    "minimum": f.min_ms,
                    "maximum": f.max_ms,
                },
                "counts": {"fail": f.fail, "success": f.success},
            }),
        );
    }
    let body = serde_json::json!({ "leader": v2::format_id(node.id), "followers": followers });
    respond(StatusCode::OK, JSON, go_json(&body))
}

/// v2 auth is never enabled on Ferrite: the user list is etcd's answer
/// for a cluster without auth.
fn auth_users(node: &Node, method: &Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let mut resp = respond(StatusCode::OK, JSON, go_json_line(&serde_json::json!({ "users": null })));
    cluster_id_header(node, resp.headers_mut());
    resp
}

fn auth_enable(node: &Node, method: &Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let mut resp = respond(StatusCode::OK, JSON, go_json_line(&serde_json::json!({ "enabled": false })));
    cluster_id_header(node, resp.headers_mut());
    resp
}

/// The etcd version Ferrite answers as: the API it is compatible with.
/// Never "0.4.x", which old clients take for etcd 0.4.
pub const ETCD_SERVER_VERSION: &str = "3.4.23";
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

fn version(method: &Method) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let v = v2::Version { server: ETCD_SERVER_VERSION.to_owned(), cluster: ETCD_CLUSTER_VERSION.to_owned() };
    respond(StatusCode::OK, JSON, go_json(&v))
}

/// etcd's `/health`: healthy when there is a leader and a linearizable
/// read goes through.
async fn health(node: &Node) -> Response {
    let healthy = node.leader().is_some() && node.read_barrier().await.is_ok();
    let (status, text) = if healthy {
        (StatusCode::OK, r#"{"health":"true"}"#)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
    };
    respond(status, TEXT, text)
}

fn metrics(node: &Node) -> Response {
    let c = &node.counters;
    let m = node.raft.metrics();
    let m = m.borrow();
    let has_leader = u8::from(m.current_leader.is_some());
    let is_leader = u8::from(m.current_leader == Some(node.id));
    let stats = node.state.with_store(|s| s.stats_json());
    let stat = |k: &str| stats.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let reads = stat("getsSuccess") + stat("getsFail");
    let writes = ["sets", "update", "create", "compareAndSwap"]
        .iter()
        .map(|p| stat(&format!("{p}Success")) + stat(&format!("{p}Fail")))
        .sum::<u64>()
        + stat("deleteSuccess")
        + stat("deleteFail")
        + stat("compareAndDeleteSuccess")
        + stat("compareAndDeleteFail");
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    let started = node.started.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        format!("{started}"),
    );
    metric(
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        has_leader.to_string(),
    );
    metric(
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        is_leader.to_string(),
    );
    metric(
        "etcd_server_leader_changes_seen_total",
        "counter",
        "The number of leader changes seen.",
        c.leader_changes.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "etcd_server_proposals_committed_total",
        "gauge",
        "The total number of consensus proposals committed.",
        m.last_log_index.unwrap_or(0).to_string(),
    );
    metric(
        "etcd_server_proposals_applied_total",
        "gauge",
        "The total number of consensus proposals applied.",
        m.last_applied.map_or(0, |l| l.index).to_string(),
    );
    metric(
        "etcd_server_proposals_failed_total",
        "counter",
        "The total number of failed proposals seen.",
        c.proposals_failed.load(Ordering::Relaxed).to_string(),
    );
    metric("etcd_server_proposals_pending", "gauge", "The current number of pending proposals to commit.", "0".into());
    metric(
        "etcd_server_id",
        "gauge",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        "1".into(),
    );
    metric(
        "etcd_debugging_store_reads_total",
        "counter",
        "Total number of reads action by (get/getRecursive), local to this member.",
        reads.to_string(),
    );
    metric(
        "etcd_debugging_store_writes_total",
        "counter",
        "Total number of writes (e.g. set/compareAndDelete) seen by this member.",
        writes.to_string(),
    );
    metric(
        "etcd_debugging_store_expires_total",
        "counter",
        "Total number of expired keys.",
        stat("expireCount").to_string(),
    );
    metric(
        "etcd_debugging_store_watchers",
        "gauge",
        "Count of currently active watchers.",
        stat("watchers").to_string(),
    );
    metric(
        "ferrite_store_proposals_forwarded_total",
        "counter",
        "Proposals this follower forwarded to the leader.",
        c.proposals_forwarded.load(Ordering::Relaxed).to_string(),
    );
    metric("ferrite_store_raft_term", "gauge", "The current raft term.", m.current_term.to_string());
    out.push_str(
        &node
            .wal_fsyncs
            .render("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL."),
    );
    respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", out)
}
