//! What the scheduler's agent asks of systemd beyond cloud-config's
//! needs: linking unit files from a directory of its own, reading many
//! units' states in one call, and following state changes as systemd
//! announces them. (Jobs queued without waiting are [`Systemd::enqueue`].)

use futures::{Stream, StreamExt as _};
use zbus::message::Type;
use zbus::zvariant::OwnedObjectPath;
use zbus::{MatchRule, MessageStream};

use crate::{call, Error, Systemd, UnitState};

/// One row of `ListUnitsByNames`: name, description, load state, active
/// state, sub state, followed unit, object path, job id, job type, job path.
pub type ListedUnit = (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

/// systemd's bus path of a unit: `/org/freedesktop/systemd1/unit/` and the
/// name with every byte other than an ASCII letter or digit written as
/// `_xx` (lower-case hex), as `sd_bus_path_encode` does.
pub fn unit_path(name: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    for (i, byte) in name.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (byte.is_ascii_digit() && i > 0) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

/// The unit name a bus path names; `None` for other paths.
pub fn unit_name(path: &str) -> Option<String> {
    let encoded = path.strip_prefix("/org/freedesktop/systemd1/unit/")?;
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Systemd {
    /// `systemctl link [--runtime] --force FILES`: makes unit files outside
    /// systemd's directories known to it.
    pub async fn link(&self, files: &[&str], runtime: bool) -> Result<(), Error> {
        self.manager.link_unit_files(files, runtime, true).await.map_err(call("LinkUnitFiles", &files.join(" ")))?;
        Ok(())
    }

    /// `systemctl enable [--runtime] --force FILES` (files or names).
    pub async fn enable_forced(&self, files: &[&str], runtime: bool) -> Result<(), Error> {
        self.manager
            .enable_unit_files(files, runtime, true)
            .await
            .map_err(call("EnableUnitFiles", &files.join(" ")))?;
        Ok(())
    }

    /// `systemctl disable [--runtime] NAMES`.
    pub async fn disable(&self, names: &[&str], runtime: bool) -> Result<(), Error> {
        self.manager.disable_unit_files(names, runtime).await.map_err(call("DisableUnitFiles", &names.join(" ")))?;
        Ok(())
    }

    /// `systemctl reset-failed NAME`; a unit systemd does not know is fine.
    pub async fn reset_failed(&self, name: &str) -> Result<(), Error> {
        match self.manager.reset_failed_unit(name).await {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(error, _, _)) if error.as_str().ends_with("NoSuchUnit") => Ok(()),
            Err(source) => {
                Err(Error::Call { call: "ResetFailedUnit", unit: name.to_owned(), source: Box::new(source) })
            }
        }
    }

    /// The states of the named units in one call (a unit systemd does not
    /// know comes back `not-found`, `inactive`, `dead`).
    pub async fn states(&self, names: &[&str]) -> Result<Vec<(String, UnitState)>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let listed =
            self.manager.list_units_by_names(names).await.map_err(call("ListUnitsByNames", &names.join(" ")))?;
        Ok(listed.into_iter().map(|(name, _, load, active, sub, ..)| (name, UnitState { load, active, sub })).collect())
    }

    /// Yields the name of a unit each time systemd announces a change of
    /// its properties (`PropertiesChanged` under the units' bus paths).
    pub async fn unit_changes(&self) -> Result<impl Stream<Item = String> + Send + 'static, Error> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| b.path_namespace("/org/freedesktop/systemd1/unit"))
            .map_err(call("AddMatch", "PropertiesChanged"))?
            .build();
        let stream = MessageStream::for_match_rule(rule, &self.connection, Some(256))
            .await
            .map_err(call("AddMatch", "PropertiesChanged"))?;
        Ok(stream.filter_map(|message| async move {
            let message = message.ok()?;
            let header = message.header();
            unit_name(header.path()?.as_str())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_round_trip() {
        assert_eq!(unit_path("hello.service"), "/org/freedesktop/systemd1/unit/hello_2eservice");
        assert_eq!(unit_path("web@1.service"), "/org/freedesktop/systemd1/unit/web_401_2eservice");
        assert_eq!(unit_path("1a.service"), "/org/freedesktop/systemd1/unit/_31a_2eservice");
        for name in ["hello.service", "web@1.service", "a-b_c:d\\x.mount", "1a.service"] {
            assert_eq!(unit_name(&unit_path(name)).as_deref(), Some(name));
        }
        assert_eq!(unit_name("/org/freedesktop/systemd1/job/3"), None);
    }
}
