//! Cluster membership, health and version.

use ferrite_etcd_api::v2::{Member, MemberCreateRequest, MemberList, Version};
use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Api, Call};
use crate::{Client, Error};

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"true"` or `"false"`, as etcd spells it.
    pub health: String,
    /// Why not healthy (newer etcd releases say).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        self.health == "true"
    }
}

impl Client {
    /// The cluster's members (`GET /v2/members`).
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        let call = Call::new(Method::GET, Api::Root, "/v2/members");
        let list: MemberList = self.execute(&call).await?.check_status()?.decode()?;
        Ok(list.members)
    }

    /// Announces a new member by its peer URLs (`POST /v2/members`); the
    /// member itself then starts with `--initial-cluster-state existing`.
    pub async fn add_member(&self, peer_urls: &[String]) -> Result<Member, Error> {
        let mut call = Call::new(Method::POST, Api::Root, "/v2/members");
        call.json = Some(peer_urls_body(peer_urls));
        self.execute(&call).await?.check_status()?.decode()
    }

    /// Removes a member by its hex id (`DELETE /v2/members/<id>`).
    pub async fn remove_member(&self, id: &str) -> Result<(), Error> {
        let path = format!("/v2/members/{id}");
        let call = Call::new(Method::DELETE, Api::Root, &path);
        self.execute(&call).await?.check_status()?;
        Ok(())
    }

    /// Changes a member's peer URLs (`PUT /v2/members/<id>`).
    pub async fn update_member(&self, id: &str, peer_urls: &[String]) -> Result<(), Error> {
        let path = format!("/v2/members/{id}");
        let mut call = Call::new(Method::PUT, Api::Root, &path);
        call.json = Some(peer_urls_body(peer_urls));
        self.execute(&call).await?.check_status()?;
        Ok(())
    }

    /// The health of the endpoint that answers (`GET /health`). An
    /// unhealthy member answers 503 with a body, which is returned as
    /// `health: "false"`, not as an error.
    pub async fn health(&self) -> Result<Health, Error> {
        let call = Call::new(Method::GET, Api::Root, "/health");
        let answer = self.execute(&call).await?;
        match answer.decode() {
            Ok(health) => Ok(health),
            Err(e) if answer.status.is_success() => Err(e),
            Err(_) => answer.check_status().and_then(|a| a.decode()),
        }
    }

    /// Server and cluster versions (`GET /version`).
    pub async fn version(&self) -> Result<Version, Error> {
        let call = Call::new(Method::GET, Api::Root, "/version");
        self.execute(&call).await?.check_status()?.decode()
    }
}

fn peer_urls_body(peer_urls: &[String]) -> serde_json::Value {
    serde_json::to_value(MemberCreateRequest { peer_urls: peer_urls.to_vec() }).expect("a list of strings is JSON")
}
