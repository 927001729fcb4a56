//! Operation counters, as `/v2/stats/store` prints them (etcd's `Stats`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The counters, in etcd's JSON field order. They count what etcd counts,
/// quirks included: etcd's CompareAndSwap, Update and Delete count an
/// error returned before their first lookup (`RootROnly`, and Update's
/// `NotFile` for a value on a directory) as a success, CompareAndDelete
/// counts its `NotFile` and `TestFailed` as successes, and a Create whose
/// path crosses a file counts as a failed set too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stats {
    pub(super) gets_success: u64,
    pub(super) gets_fail: u64,
    pub(super) sets_success: u64,
    pub(super) sets_fail: u64,
    pub(super) delete_success: u64,
    pub(super) delete_fail: u64,
    pub(super) update_success: u64,
    pub(super) update_fail: u64,
    pub(super) create_success: u64,
    pub(super) create_fail: u64,
    pub(super) compare_and_swap_success: u64,
    pub(super) compare_and_swap_fail: u64,
    pub(super) compare_and_delete_success: u64,
    pub(super) compare_and_delete_fail: u64,
    pub(super) expire_count: u64,
}

/// Which counter pair an operation feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Get,
    Set,
    Delete,
    Update,
    Create,
    CompareAndSwap,
    CompareAndDelete,
}

impl Stats {
    pub(super) fn count(&mut self, op: Op, success: bool) {
        let counter = match (op, success) {
            (Op::Get, true) => &mut self.gets_success,
            (Op::Get, false) => &mut self.gets_fail,
            (Op::Set, true) => &mut self.sets_success,
            (Op::Set, false) => &mut self.sets_fail,
            (Op::Delete, true) => &mut self.delete_success,
            (Op::Delete, false) => &mut self.delete_fail,
            (Op::Update, true) => &mut self.update_success,
            (Op::Update, false) => &mut self.update_fail,
            (Op::Create, true) => &mut self.create_success,
            (Op::Create, false) => &mut self.create_fail,
            (Op::CompareAndSwap, true) => &mut self.compare_and_swap_success,
            (Op::CompareAndSwap, false) => &mut self.compare_and_swap_fail,
            (Op::CompareAndDelete, true) => &mut self.compare_and_delete_success,
            (Op::CompareAndDelete, false) => &mut self.compare_and_delete_fail,
        };
        *counter += 1;
    }

    /// The `/v2/stats/store` object, `watchers` being the live watch count.
    pub(super) fn to_json(&self, watchers: u64) -> Value {
        let fields = [
            ("getsSuccess", self.gets_success),
            ("getsFail", self.gets_fail),
            ("setsSuccess", self.sets_success),
            ("setsFail", self.sets_fail),
            ("deleteSuccess", self.delete_success),
            ("deleteFail", self.delete_fail),
            ("updateSuccess", self.update_success),
            ("updateFail", self.update_fail),
            ("createSuccess", self.create_success),
            ("createFail", self.create_fail),
            ("compareAndSwapSuccess", self.compare_and_swap_success),
            ("compareAndSwapFail", self.compare_and_swap_fail),
            ("compareAndDeleteSuccess", self.compare_and_delete_success),
            ("compareAndDeleteFail", self.compare_and_delete_fail),
            ("expireCount", self.expire_count),
            ("watchers", watchers),
        ];
        let map: Map<String, Value> = fields.into_iter().map(|(name, n)| (name.to_owned(), Value::from(n))).collect();
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_in_etcd_field_order() {
        let mut stats = Stats::default();
        stats.count(Op::Get, true);
        stats.count(Op::CompareAndDelete, false);
        stats.expire_count = 2;
        assert_eq!(
            serde_json::to_string(&stats.to_json(3)).unwrap(),
            r#"{"getsSuccess":1,"getsFail":0,"setsSuccess":0,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":1,"expireCount":2,"watchers":3}"#
        );
    }
}
