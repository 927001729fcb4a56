//! fleet's HTTP API v1 entities (`schema/v1-gen.go`), as JSON: field names,
//! order and omission rules are fleet's, so fleetctl and API clients
//! written for fleet read them unchanged.

use serde::{Deserialize, Serialize};

use crate::unit_file::{UnitFile, UnitOption as FileOption};

/// One option of a unit file. An empty value is left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitOption {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub section: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// A unit as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub desired_state: String,
    #[serde(default, rename = "machineID", skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<UnitOption>,
}

/// What systemd reports of a unit on one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitState {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    #[serde(default, rename = "machineID", skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub systemd_active_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub systemd_load_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub systemd_sub_state: String,
}

/// A machine of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "primaryIP", skip_serializing_if = "String::is_empty")]
    pub primary_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitPage {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatePage {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<UnitState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePage {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<Machine>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// The API's error body: `{"error":{"code":404,"message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: u16,
    #[serde(default)]
    pub message: String,
}

/// The unit file an API unit's options describe.
pub fn unit_file(options: &[UnitOption]) -> UnitFile {
    UnitFile::from_options(
        options
            .iter()
            .map(|o| FileOption { section: o.section.clone(), name: o.name.clone(), value: o.value.clone() })
            .collect(),
    )
}

/// A unit file's options as the API lists them.
pub fn options(file: &UnitFile) -> Vec<UnitOption> {
    file.options()
        .iter()
        .map(|o| UnitOption { name: o.name.clone(), section: o.section.clone(), value: o.value.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_serialises_as_fleet_does() {
        let unit = Unit {
            current_state: "launched".into(),
            desired_state: "launched".into(),
            machine_id: "abc".into(),
            name: "foo.service".into(),
            options: vec![
                UnitOption { name: "ExecStart".into(), section: "Service".into(), value: "/usr/bin/sleep 3000".into() },
                UnitOption { name: "Environment".into(), section: "Service".into(), value: String::new() },
            ],
        };
        assert_eq!(
            serde_json::to_string(&unit).unwrap(),
            r#"{"currentState":"launched","desiredState":"launched","machineID":"abc","name":"foo.service","options":[{"name":"ExecStart","section":"Service","value":"/usr/bin/sleep 3000"},{"name":"Environment","section":"Service"}]}"#
        );
    }

    #[test]
    fn empty_pages_are_empty_objects() {
        assert_eq!(serde_json::to_string(&UnitPage::default()).unwrap(), "{}");
        let page = MachinePage {
            machines: vec![Machine {
                id: "m1".into(),
                metadata: [("hostname".to_owned(), "smoke".to_owned())].into(),
                primary_ip: "172.18.1.1".into(),
            }],
            next_page_token: "ZAACAA==".into(),
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"machines":[{"id":"m1","metadata":{"hostname":"smoke"},"primaryIP":"172.18.1.1"}],"nextPageToken":"ZAACAA=="}"#
        );
    }

    #[test]
    fn options_round_trip_through_a_unit_file_and_keep_its_hash() {
        let file = UnitFile::parse("[Service]\nExecStart=/bin/sleep 100\n").unwrap();
        let back = unit_file(&options(&file));
        assert_eq!(back.hash().to_string(), "1c6fb6f3684bafb0c173d8b8b957ceff031180c1");
    }
}
