//! The v2 keys API: reads, writes, conditions, TTLs and single watches.
//!
//! Parameters travel as etcd's own Go client sends them: conditions, `ttl`,
//! `dir` and `refresh` in the query string, the value in a form body.

use std::time::Duration;

use http::Method;

use crate::client::{Api, Call};
use crate::{Client, Error, Response};

/// How to read a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// List a directory's whole subtree, not just its children.
    pub recursive: bool,
    /// List children in key order.
    pub sorted: bool,
    /// Read through raft, so the answer is never stale.
    pub quorum: bool,
}

/// How to write a key. The `prev_*` fields make the write conditional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live, sent in whole seconds and rounded up.
    pub ttl: Option<Duration>,
    /// Write only if the current value is this (compare-and-swap).
    pub prev_value: Option<String>,
    /// Write only if the key was last modified at this index.
    pub prev_index: Option<u64>,
    /// `Some(false)`: create only; `Some(true)`: update only.
    pub prev_exist: Option<bool>,
    /// Make a directory rather than a value.
    pub dir: bool,
    /// Only reset the TTL; no value is sent and watchers are not woken.
    pub refresh: bool,
}

/// How to delete a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete a directory and everything under it.
    pub recursive: bool,
    /// The key is a directory (empty, unless `recursive`).
    pub dir: bool,
    /// Delete only if the current value is this (compare-and-delete).
    pub prev_value: Option<String>,
    /// Delete only if the key was last modified at this index.
    pub prev_index: Option<u64>,
}

/// How to watch a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Wake on changes anywhere under the key.
    pub recursive: bool,
    /// The first index of interest (etcd's `waitIndex`); `None` waits for
    /// the next change from now.
    pub wait_index: Option<u64>,
}

/// Whole seconds, rounded up, so a short TTL never becomes "no TTL".
pub(crate) fn ttl_seconds(ttl: Duration) -> u64 {
    let secs = ttl.as_secs();
    if ttl.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

fn flag(query: &mut Vec<(&'static str, String)>, name: &'static str, on: bool) {
    if on {
        query.push((name, "true".to_owned()));
    }
}

impl Client {
    /// Reads a key or lists a directory.
    pub async fn get(&self, key: &str, options: &GetOptions) -> Result<Response, Error> {
        let mut call = Call::new(Method::GET, Api::Keys, key);
        flag(&mut call.query, "recursive", options.recursive);
        flag(&mut call.query, "sorted", options.sorted);
        flag(&mut call.query, "quorum", options.quorum);
        self.execute(&call).await?.into_keys_response()
    }

    /// Writes a key (PUT), under the conditions in `options`.
    pub async fn set(&self, key: &str, value: &str, options: &SetOptions) -> Result<Response, Error> {
        let mut call = Call::new(Method::PUT, Api::Keys, key);
        if let Some(prev) = &options.prev_value {
            call.query.push(("prevValue", prev.clone()));
        }
        if let Some(prev) = options.prev_index {
            call.query.push(("prevIndex", prev.to_string()));
        }
        if let Some(exist) = options.prev_exist {
            call.query.push(("prevExist", exist.to_string()));
        }
        if let Some(ttl) = options.ttl {
            call.query.push(("ttl", ttl_seconds(ttl).to_string()));
        }
        flag(&mut call.query, "refresh", options.refresh);
        flag(&mut call.query, "dir", options.dir);
        if !options.dir && !options.refresh {
            call.form = Some(vec![("value", value.to_owned())]);
        }
        self.execute(&call).await?.into_keys_response()
    }

    /// Creates a key that must not exist yet (`prevExist=false`); fails with
    /// `NodeExist` otherwise.
    pub async fn create(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<Response, Error> {
        let options = SetOptions { ttl, prev_exist: Some(false), ..SetOptions::default() };
        self.set(key, value, &options).await
    }

    /// Changes a key that must exist (`prevExist=true`); fails with
    /// `KeyNotFound` otherwise.
    pub async fn update(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<Response, Error> {
        let options = SetOptions { ttl, prev_exist: Some(true), ..SetOptions::default() };
        self.set(key, value, &options).await
    }

    /// Creates a directory that must not exist yet.
    pub async fn create_dir(&self, key: &str, ttl: Option<Duration>) -> Result<Response, Error> {
        let options = SetOptions { ttl, prev_exist: Some(false), dir: true, ..SetOptions::default() };
        self.set(key, "", &options).await
    }

    /// Writes `value` only if the key's value is `prev_value` and/or it was
    /// last modified at `prev_index`; fails with `TestFailed` otherwise.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        value: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<Response, Error> {
        let options =
            SetOptions { ttl, prev_value: prev_value.map(str::to_owned), prev_index, ..SetOptions::default() };
        self.set(key, value, &options).await
    }

    /// Resets a key's TTL without changing its value or waking watchers.
    pub async fn refresh(&self, key: &str, ttl: Duration) -> Result<Response, Error> {
        let options = SetOptions { ttl: Some(ttl), prev_exist: Some(true), refresh: true, ..SetOptions::default() };
        self.set(key, "", &options).await
    }

    /// Deletes a key or directory.
    pub async fn delete(&self, key: &str, options: &DeleteOptions) -> Result<Response, Error> {
        let mut call = Call::new(Method::DELETE, Api::Keys, key);
        flag(&mut call.query, "recursive", options.recursive);
        flag(&mut call.query, "dir", options.dir);
        if let Some(prev) = &options.prev_value {
            call.query.push(("prevValue", prev.clone()));
        }
        if let Some(prev) = options.prev_index {
            call.query.push(("prevIndex", prev.to_string()));
        }
        self.execute(&call).await?.into_keys_response()
    }

    /// Deletes a key only if its value is `prev_value` and/or it was last
    /// modified at `prev_index`.
    pub async fn compare_and_delete(
        &self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<Response, Error> {
        let options =
            DeleteOptions { prev_value: prev_value.map(str::to_owned), prev_index, ..DeleteOptions::default() };
        self.delete(key, &options).await
    }

    /// Creates a key with a unique, increasing name in directory `dir`
    /// (POST); the answer's node carries the name chosen.
    pub async fn create_in_order(&self, dir: &str, value: &str, ttl: Option<Duration>) -> Result<Response, Error> {
        let mut call = Call::new(Method::POST, Api::Keys, dir);
        if let Some(ttl) = ttl {
            call.query.push(("ttl", ttl_seconds(ttl).to_string()));
        }
        call.form = Some(vec![("value", value.to_owned())]);
        self.execute(&call).await?.into_keys_response()
    }

    /// Waits for one change of `key` (or under it, if recursive) at or after
    /// `wait_index`. Has no time limit. For following a key for good use
    /// [`Client::watch_stream`].
    pub async fn watch(&self, key: &str, options: &WatchOptions) -> Result<Response, Error> {
        loop {
            let mut call = Call::new(Method::GET, Api::Keys, key);
            call.wait = true;
            call.query.push(("wait", "true".to_owned()));
            if let Some(index) = options.wait_index {
                call.query.push(("waitIndex", index.to_string()));
            }
            flag(&mut call.query, "recursive", options.recursive);
            let answer = self.execute(&call).await?;
            // etcd ends a watch with an empty body when it gives up on it
            // (the Go client's ErrEmptyBody): ask again.
            if answer.status.is_success() && answer.body.is_empty() {
                tracing::debug!(key, "watch closed without an event; watching again");
                continue;
            }
            return answer.into_keys_response();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_secs(5)), 5);
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::ZERO), 0);
    }

    mod over_http {
        use super::*;
        use crate::fake_server::{event, FakeServer, Seen};
        use ferrite_etcd_api::v2::{Action, ErrorCode};

        const SET: &str = r#"{"action":"set","node":{"key":"/k","value":"v","modifiedIndex":7,"createdIndex":7}}"#;

        async fn one(call: impl AsyncFnOnce(&Client) -> Result<Response, Error>) -> (Result<Response, Error>, Seen) {
            let server = FakeServer::start(|_, _| event(200, 7, SET)).await;
            let client = Client::new([server.url.as_str()]).unwrap();
            let result = call(&client).await;
            (result, server.seen().remove(0))
        }

        #[tokio::test]
        async fn get_sends_its_flags() {
            let (r, seen) = one(async |c| {
                let options = GetOptions { recursive: true, sorted: true, quorum: true };
                c.get("/dir/a", &options).await
            })
            .await;
            r.unwrap();
            assert_eq!(seen.method, Method::GET);
            assert_eq!(seen.path, "/v2/keys/dir/a");
            assert_eq!(seen.param("recursive"), Some("true"));
            assert_eq!(seen.param("sorted"), Some("true"));
            assert_eq!(seen.param("quorum"), Some("true"));

            let (_, plain) = one(async |c| c.get("/k", &GetOptions::default()).await).await;
            assert!(plain.query.is_empty());
        }

        #[tokio::test]
        async fn set_sends_conditions_in_the_query_and_the_value_in_a_form() {
            let (r, seen) = one(async |c| {
                let options = SetOptions {
                    ttl: Some(Duration::from_secs(30)),
                    prev_value: Some("old value".into()),
                    prev_index: Some(4),
                    prev_exist: Some(true),
                    ..SetOptions::default()
                };
                c.set("/k", "new & value", &options).await
            })
            .await;
            let r = r.unwrap();
            assert_eq!(r.event.action, Action::Set);
            assert_eq!(r.etcd_index(), 7);
            assert_eq!(seen.method, Method::PUT);
            assert_eq!(seen.param("ttl"), Some("30"));
            assert_eq!(seen.param("prevValue"), Some("old value"));
            assert_eq!(seen.param("prevIndex"), Some("4"));
            assert_eq!(seen.param("prevExist"), Some("true"));
            assert_eq!(seen.body, "value=new+%26+value");
            assert_eq!(seen.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
        }

        #[tokio::test]
        async fn the_shorthands_send_what_etcd_expects() {
            let (_, create) = one(async |c| c.create("/k", "v", None).await).await;
            assert_eq!(create.param("prevExist"), Some("false"));
            assert_eq!(create.param("ttl"), None);

            let (_, update) = one(async |c| c.update("/k", "v", None).await).await;
            assert_eq!(update.param("prevExist"), Some("true"));

            let (_, dir) = one(async |c| c.create_dir("/d", Some(Duration::from_secs(5))).await).await;
            assert_eq!(dir.param("dir"), Some("true"));
            assert_eq!(dir.param("prevExist"), Some("false"));
            assert_eq!(dir.param("ttl"), Some("5"));
            assert_eq!(dir.body, "");

            let (_, cas) = one(async |c| c.compare_and_swap("/k", "v2", Some("v1"), None, None).await).await;
            assert_eq!(cas.param("prevValue"), Some("v1"));
            assert_eq!(cas.param("prevIndex"), None);

            let (_, refresh) = one(async |c| c.refresh("/k", Duration::from_secs(10)).await).await;
            assert_eq!(refresh.param("refresh"), Some("true"));
            assert_eq!(refresh.param("ttl"), Some("10"));
            assert_eq!(refresh.param("prevExist"), Some("true"));
            assert_eq!(refresh.body, "", "a refresh sends no value");

            let (_, cad) = one(async |c| c.compare_and_delete("/k", None, Some(9)).await).await;
            assert_eq!(cad.method, Method::DELETE);
            assert_eq!(cad.param("prevIndex"), Some("9"));

            let (_, del) = one(async |c| {
                let options = DeleteOptions { recursive: true, dir: true, ..DeleteOptions::default() };
                c.delete("/d", &options).await
            })
            .await;
            assert_eq!(del.param("recursive"), Some("true"));
            assert_eq!(del.param("dir"), Some("true"));

            let (_, post) =
                one(async |c| c.create_in_order("/queue", "job", Some(Duration::from_secs(60))).await).await;
            assert_eq!(post.method, Method::POST);
            assert_eq!(post.path, "/v2/keys/queue");
            assert_eq!(post.param("ttl"), Some("60"));
            assert_eq!(post.body, "value=job");

            let (_, watch) = one(async |c| {
                let options = WatchOptions { recursive: true, wait_index: Some(12) };
                c.watch("/d", &options).await
            })
            .await;
            assert_eq!(watch.param("wait"), Some("true"));
            assert_eq!(watch.param("waitIndex"), Some("12"));
            assert_eq!(watch.param("recursive"), Some("true"));
        }

        #[tokio::test]
        async fn etcd_errors_become_api_errors() {
            let server = FakeServer::start(|_, _| {
                event(412, 8, r#"{"errorCode":101,"message":"Compare failed","cause":"[a != b]","index":8}"#)
            })
            .await;
            let client = Client::new([server.url.as_str()]).unwrap();
            let err = client.compare_and_swap("/k", "c", Some("a"), None, None).await.unwrap_err();
            assert!(err.is(ErrorCode::TestFailed));
            match err {
                Error::Api(e) => {
                    assert_eq!(e.cause, "[a != b]");
                    assert_eq!(e.index, 8);
                }
                other => panic!("{other:?}"),
            }
        }

        #[tokio::test]
        async fn a_body_that_is_not_etcds_is_a_decode_error_carrying_it() {
            let server = FakeServer::start(|_, _| (404, vec![], "404 page not found\n".into())).await;
            let client = Client::new([server.url.as_str()]).unwrap();
            let err = client.get("/k", &GetOptions::default()).await.unwrap_err();
            match &err {
                Error::Decode { status, body, .. } => {
                    assert_eq!(status.as_u16(), 404);
                    assert_eq!(body, "404 page not found\n");
                }
                other => panic!("{other:?}"),
            }
            assert!(err.to_string().contains("404 page not found"));
        }

        #[tokio::test]
        async fn a_watch_closed_without_a_body_is_asked_again() {
            let server = FakeServer::start(|_, n| if n == 0 { event(200, 3, "") } else { event(200, 3, SET) }).await;
            let client = Client::new([server.url.as_str()]).unwrap();
            let r = client.watch("/k", &WatchOptions::default()).await.unwrap();
            assert_eq!(r.node().modified_index, 7);
            assert_eq!(server.seen().len(), 2);
        }
    }
}
