//! Following a key or prefix for good, as the scheduler and the
//! registrator do.
//!
//! A watch resumes from the last seen `modifiedIndex + 1`, so no change is
//! missed between two waits. etcd keeps only the last 1000 events; when the
//! index to resume from is older, etcd answers `EventIndexCleared` (401),
//! and the stream reads the key afresh, hands that state to the caller as
//! [`WatchEvent::Resync`], and watches on from the index of that read.

use std::time::Duration;

use ferrite_etcd_api::v2::{ErrorCode, Node};
use futures::Stream;

use crate::{Client, Error, GetOptions, Response, WatchOptions};

/// One item of [`Client::watch_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A change, in index order.
    Change(Response),
    /// Changes were missed because etcd no longer holds them: this is the
    /// key's whole current state (recursive, sorted, quorum read), or `None`
    /// if it does not exist. Changes after `etcd_index` follow.
    Resync { node: Option<Node>, etcd_index: u64 },
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Follow {
    client: Client,
    key: String,
    recursive: bool,
    next_index: Option<u64>,
    resync: bool,
    failures: u32,
}

impl Follow {
    fn backoff(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(16);
        (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
    }

    async fn next(&mut self) -> Result<WatchEvent, Error> {
        if self.failures > 0 {
            tokio::time::sleep(self.backoff()).await;
        }
        loop {
            if self.resync {
                let read = GetOptions { recursive: self.recursive, sorted: true, quorum: true };
                let (node, etcd_index) = match self.client.get(&self.key, &read).await {
                    Ok(response) => (Some(response.event.node), response.headers.etcd_index),
                    Err(Error::Api(e)) if e.code() == Some(ErrorCode::KeyNotFound) => (None, e.index),
                    Err(e) => return Err(e),
                };
                self.resync = false;
                self.next_index = Some(etcd_index + 1);
                return Ok(WatchEvent::Resync { node, etcd_index });
            }
            let options = WatchOptions { recursive: self.recursive, wait_index: self.next_index };
            match self.client.watch(&self.key, &options).await {
                Ok(response) => {
                    self.next_index = Some(response.event.node.modified_index + 1);
                    return Ok(WatchEvent::Change(response));
                }
                Err(e) if e.is(ErrorCode::EventIndexCleared) => {
                    tracing::info!(
                        key = %self.key,
                        from = ?self.next_index,
                        "watch history cleared; reading the key again"
                    );
                    self.resync = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Client {
    /// Follows `key` (and its subtree, if `options.recursive`) forever,
    /// starting at `options.wait_index` (or now).
    ///
    /// Yields every change in index order, and a [`WatchEvent::Resync`]
    /// when etcd's history no longer reaches back to the index it needs. An
    /// error is yielded and the watch goes on after a backoff (100 ms
    /// doubling to 5 s), from where it was; drop the stream to stop.
    pub fn watch_stream(
        &self,
        key: &str,
        options: WatchOptions,
    ) -> impl Stream<Item = Result<WatchEvent, Error>> + Send + 'static {
        let follow = Follow {
            client: self.clone(),
            key: key.to_owned(),
            recursive: options.recursive,
            next_index: options.wait_index,
            resync: false,
            failures: 0,
        };
        futures::stream::unfold(follow, |mut follow| async move {
            let item = follow.next().await;
            match &item {
                Ok(_) => follow.failures = 0,
                Err(e) => {
                    follow.failures += 1;
                    tracing::warn!(key = %follow.key, error = %e, "watch failed; retrying");
                }
            }
            Some((item, follow))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let client = Client::new(["http://127.0.0.1:1"]).unwrap();
        let mut follow =
            Follow { client, key: "/k".into(), recursive: false, next_index: None, resync: false, failures: 1 };
        assert_eq!(follow.backoff(), Duration::from_millis(100));
        follow.failures = 2;
        assert_eq!(follow.backoff(), Duration::from_millis(200));
        follow.failures = 40;
        assert_eq!(follow.backoff(), MAX_BACKOFF);
    }

    mod over_http {
        use super::*;
        use crate::fake_server::{event, FakeServer};
        use futures::StreamExt;

        fn set(index: u64, value: &str) -> String {
            format!(
                r#"{{"action":"set","node":{{"key":"/d/k","value":"{value}","modifiedIndex":{index},"createdIndex":2}}}}"#
            )
        }

        #[tokio::test]
        async fn resumes_after_the_last_index_and_resyncs_on_a_cleared_index() {
            let server = FakeServer::start(|seen, _| {
                let wait = seen.param("wait").is_some();
                match (wait, seen.param("waitIndex")) {
                    (true, Some("5")) => event(200, 4, &set(5, "a")),
                    (true, Some("6")) => event(
                        400,
                        2000,
                        r#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [1000/6]","index":2000}"#,
                    ),
                    (false, _) => event(
                        200,
                        2000,
                        r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/k","value":"z","modifiedIndex":1999,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}}"#,
                    ),
                    (true, Some("2001")) => event(200, 2000, &set(2001, "b")),
                    _ => (500, vec![], "unexpected".into()),
                }
            })
            .await;
            let client = Client::new([server.url.as_str()]).unwrap();
            let options = WatchOptions { recursive: true, wait_index: Some(5) };
            let items: Vec<_> = client.watch_stream("/d", options).take(3).collect().await;
            let items: Vec<WatchEvent> = items.into_iter().map(Result::unwrap).collect();
            match &items[0] {
                WatchEvent::Change(r) => assert_eq!(r.node().value.as_deref(), Some("a")),
                other => panic!("{other:?}"),
            }
            match &items[1] {
                WatchEvent::Resync { node, etcd_index } => {
                    assert_eq!(*etcd_index, 2000);
                    let node = node.as_ref().unwrap();
                    assert_eq!(node.nodes.as_ref().unwrap()[0].value.as_deref(), Some("z"));
                }
                other => panic!("{other:?}"),
            }
            match &items[2] {
                WatchEvent::Change(r) => assert_eq!(r.node().modified_index, 2001),
                other => panic!("{other:?}"),
            }
            let reread = server.seen().into_iter().find(|s| s.param("wait").is_none()).unwrap();
            assert_eq!(reread.param("recursive"), Some("true"));
            assert_eq!(reread.param("quorum"), Some("true"));
        }

        #[tokio::test]
        async fn an_error_is_yielded_and_the_watch_goes_on_from_where_it_was() {
            let server = FakeServer::start(|seen, n| {
                if n == 0 {
                    (500, vec![], "boom".into())
                } else {
                    assert_eq!(seen.param("waitIndex"), Some("5"));
                    event(200, 4, &set(5, "a"))
                }
            })
            .await;
            let client = Client::new([server.url.as_str()]).unwrap();
            let options = WatchOptions { recursive: false, wait_index: Some(5) };
            let items: Vec<_> = client.watch_stream("/d/k", options).take(2).collect().await;
            assert!(matches!(items[0], Err(Error::Decode { .. })));
            assert!(matches!(items[1], Ok(WatchEvent::Change(_))));
        }
    }
}
