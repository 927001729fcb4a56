//! The store's behaviour, operation by operation, against what etcd 3.4
//! answers (shapes checked as JSON strings, as the HTTP layer prints them).

use ferrite_etcd_api::v2::{Error, Event};

use super::*;

const SECOND: i64 = 1_000_000_000;
/// 2026-11-25T22:00:00Z.
const NOW: UnixNanos = 1_795_644_000 * SECOND;

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn set(store: &mut Store, key: &str, value: &str) -> Applied {
    let command = Command::Set { key: key.into(), dir: false, value: value.into(), ttl: Ttl::default() };
    store.apply(&command, NOW).unwrap()
}

fn set_ttl(store: &mut Store, key: &str, value: &str, expire_at: UnixNanos) -> Applied {
    let command = Command::Set {
        key: key.into(),
        dir: false,
        value: value.into(),
        ttl: Ttl { expire_at: Some(expire_at), refresh: false },
    };
    store.apply(&command, NOW).unwrap()
}

fn mkdir(store: &mut Store, key: &str) -> Applied {
    let command = Command::Set { key: key.into(), dir: true, value: String::new(), ttl: Ttl::default() };
    store.apply(&command, NOW).unwrap()
}

fn delete(key: &str, dir: bool, recursive: bool) -> Command {
    Command::Delete { key: key.into(), dir, recursive }
}

fn cas(key: &str, prev_value: &str, prev_index: u64, value: &str) -> Command {
    Command::CompareAndSwap {
        key: key.into(),
        prev_value: prev_value.into(),
        prev_index,
        value: value.into(),
        ttl: Ttl::default(),
    }
}

fn cad(key: &str, prev_value: &str, prev_index: u64) -> Command {
    Command::CompareAndDelete { key: key.into(), prev_value: prev_value.into(), prev_index }
}

fn update(key: &str, value: &str, ttl: Ttl) -> Command {
    Command::Update { key: key.into(), value: value.into(), ttl }
}

fn create(key: &str, dir: bool, value: &str, unique: bool) -> Command {
    Command::Create { key: key.into(), dir, value: value.into(), unique, ttl: Ttl::default() }
}

fn get(store: &mut Store, key: &str, recursive: bool) -> String {
    json(&store.get(key, recursive, true, NOW).unwrap().event)
}

fn failure(result: Result<Applied, Error>) -> String {
    json(&result.unwrap_err())
}

fn stat(store: &Store, name: &str) -> u64 {
    store.stats_json()[name].as_u64().unwrap()
}

fn expires(at: UnixNanos) -> Ttl {
    Ttl { expire_at: Some(at), refresh: false }
}

fn refresh(at: UnixNanos) -> Ttl {
    Ttl { expire_at: Some(at), refresh: true }
}

// ---- the root ----

#[test]
fn the_root_is_an_empty_directory_without_key_or_indexes() {
    let mut store = Store::new();
    assert_eq!(store.index(), 0);
    let answer = store.get("/", false, false, NOW).unwrap();
    assert_eq!(json(&answer.event), r#"{"action":"get","node":{"dir":true}}"#);
    assert_eq!(answer.etcd_index, 0);
    set(&mut store, "/b", "2");
    set(&mut store, "/a", "1");
    set(&mut store, "/_hidden", "h");
    assert_eq!(
        get(&mut store, "", false),
        r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/a","value":"1","modifiedIndex":2,"createdIndex":2},{"key":"/b","value":"2","modifiedIndex":1,"createdIndex":1}]}}"#
    );
}

#[test]
fn writes_to_the_root_are_refused_with_etcd_causes_and_counts() {
    let mut store = Store::new();
    set(&mut store, "/k", "v");
    let root_ro = r#"{"errorCode":107,"message":"Root is read only","cause":"/","index":1}"#;
    let commands = [
        Command::Set { key: "/".into(), dir: false, value: "x".into(), ttl: Ttl::default() },
        Command::Set { key: "//".into(), dir: true, value: String::new(), ttl: Ttl::default() },
        create("/", false, "x", false),
        update("/", "x", Ttl::default()),
        cas("/", "x", 0, "y"),
        delete("/", true, true),
    ];
    for command in &commands {
        assert_eq!(failure(store.apply(command, NOW)), root_ro, "{command:?}");
    }
    // etcd has no read-only check here: "Not a file" about "/1", trimmed away.
    assert_eq!(failure(store.apply(&cad("/", "x", 0), NOW)), r#"{"errorCode":102,"message":"Not a file","index":1}"#);
    assert_eq!(store.index(), 1);
    // What etcd 3.4 counted for the same requests (checked on a real etcd).
    assert_eq!((stat(&store, "setsSuccess"), stat(&store, "setsFail")), (1, 2));
    assert_eq!(stat(&store, "createFail"), 1);
    assert_eq!((stat(&store, "updateSuccess"), stat(&store, "updateFail")), (1, 0));
    assert_eq!(stat(&store, "compareAndSwapSuccess"), 1);
    assert_eq!(stat(&store, "deleteSuccess"), 1);
    assert_eq!(stat(&store, "compareAndDeleteSuccess"), 1);
}

#[test]
fn posting_under_the_root_makes_a_top_level_key() {
    let mut store = Store::new();
    let answer = store.apply(&create("/", false, "job", true), NOW).unwrap();
    assert_eq!(
        json(&answer.event),
        r#"{"action":"create","node":{"key":"/00000000000000000001","value":"job","modifiedIndex":1,"createdIndex":1}}"#
    );
}

// ---- set, create, get ----

#[test]
fn set_creates_then_replaces_with_prev_node() {
    let mut store = Store::new();
    let first = set(&mut store, "/foo", "bar");
    assert_eq!(
        json(&first.event),
        r#"{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(first.etcd_index, 1);
    let second = set(&mut store, "/foo", "baz");
    assert_eq!(
        json(&second.event),
        r#"{"action":"set","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(store.index(), 2);
    assert_eq!(
        get(&mut store, "/foo", false),
        r#"{"action":"get","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2}}"#
    );
}

#[test]
fn keys_are_cleaned_like_go_path_clean() {
    let mut store = Store::new();
    let answer = set(&mut store, "//a/./b/", "v");
    assert_eq!(answer.event.node.key, "/a/b");
    assert_eq!(store.get("a/b", false, false, NOW).unwrap().event.node.value.as_deref(), Some("v"));
    assert_eq!(store.get("/a/x/../b/", false, false, NOW).unwrap().event.node.key, "/a/b");
}

#[test]
fn an_empty_value_is_printed_and_a_directory_has_none() {
    let mut store = Store::new();
    assert_eq!(
        json(&set(&mut store, "/e", "").event),
        r#"{"action":"set","node":{"key":"/e","value":"","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(
        json(&mkdir(&mut store, "/d").event),
        r#"{"action":"set","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":2}}"#
    );
    assert_eq!(
        get(&mut store, "/d", false),
        r#"{"action":"get","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":2}}"#
    );
}

#[test]
fn set_can_turn_a_key_into_a_directory_but_not_back() {
    let mut store = Store::new();
    set(&mut store, "/k", "v");
    assert_eq!(
        json(&mkdir(&mut store, "/k").event),
        r#"{"action":"set","node":{"key":"/k","dir":true,"modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/k","value":"v","modifiedIndex":1,"createdIndex":1}}"#
    );
    let over_dir = Command::Set { key: "/k".into(), dir: false, value: "v".into(), ttl: Ttl::default() };
    assert_eq!(
        failure(store.apply(&over_dir, NOW)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/k","index":2}"#
    );
    assert_eq!(stat(&store, "setsFail"), 1);
}

#[test]
fn intermediate_directories_take_the_writes_index() {
    let mut store = Store::new();
    set(&mut store, "/x", "1");
    set(&mut store, "/a/b/c", "v");
    assert_eq!(
        get(&mut store, "/a", true),
        r#"{"action":"get","node":{"key":"/a","dir":true,"nodes":[{"key":"/a/b","dir":true,"nodes":[{"key":"/a/b/c","value":"v","modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}}"#
    );
}

#[test]
fn listings_are_sorted_hide_underscore_keys_and_recurse_on_request() {
    let mut store = Store::new();
    set(&mut store, "/d/b", "2");
    set(&mut store, "/d/a", "1");
    set(&mut store, "/d/_h", "hidden");
    set(&mut store, "/d/s/_deep", "hidden too");
    set(&mut store, "/d/s/t", "3");
    assert_eq!(
        get(&mut store, "/d", false),
        r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/a","value":"1","modifiedIndex":2,"createdIndex":2},{"key":"/d/b","value":"2","modifiedIndex":1,"createdIndex":1},{"key":"/d/s","dir":true,"modifiedIndex":4,"createdIndex":4}],"modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(
        get(&mut store, "/d", true),
        r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/a","value":"1","modifiedIndex":2,"createdIndex":2},{"key":"/d/b","value":"2","modifiedIndex":1,"createdIndex":1},{"key":"/d/s","dir":true,"nodes":[{"key":"/d/s/t","value":"3","modifiedIndex":5,"createdIndex":5}],"modifiedIndex":4,"createdIndex":4}],"modifiedIndex":1,"createdIndex":1}}"#
    );
    // Hidden keys still read directly.
    assert_eq!(
        get(&mut store, "/d/_h", false),
        r#"{"action":"get","node":{"key":"/d/_h","value":"hidden","modifiedIndex":3,"createdIndex":3}}"#
    );
}

#[test]
fn get_errors_name_the_first_missing_key_or_the_file_in_the_way() {
    let mut store = Store::new();
    set(&mut store, "/f", "v");
    assert_eq!(
        failure(store.get("/nope/deeper", false, false, NOW)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/nope","index":1}"#
    );
    assert_eq!(
        failure(store.get("/f/g/h", false, false, NOW)),
        r#"{"errorCode":104,"message":"Not a directory","cause":"/f","index":1}"#
    );
    assert_eq!((stat(&store, "getsSuccess"), stat(&store, "getsFail")), (0, 2));
    store.get("/f", false, false, NOW).unwrap();
    assert_eq!(stat(&store, "getsSuccess"), 1);
}

#[test]
fn create_refuses_existing_nodes_and_files_on_the_path() {
    let mut store = Store::new();
    assert_eq!(
        json(&store.apply(&create("/c", false, "v", false), NOW).unwrap().event),
        r#"{"action":"create","node":{"key":"/c","value":"v","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(
        failure(store.apply(&create("/c", false, "w", false), NOW)),
        r#"{"errorCode":105,"message":"Key already exists","cause":"/c","index":1}"#
    );
    assert_eq!(
        failure(store.apply(&create("/c/d", false, "w", false), NOW)),
        r#"{"errorCode":104,"message":"Not a directory","cause":"/c","index":1}"#
    );
    assert_eq!(
        failure(store.apply(&create("/c", false, "w", true), NOW)),
        r#"{"errorCode":104,"message":"Not a directory","cause":"/c","index":1}"#
    );
    // etcd counts a path crossing a file as a failed set as well.
    assert_eq!((stat(&store, "createSuccess"), stat(&store, "createFail")), (1, 3));
    assert_eq!(stat(&store, "setsFail"), 2);
    assert_eq!(store.index(), 1);
}

#[test]
fn unique_create_names_keys_by_the_new_index() {
    let mut store = Store::new();
    set(&mut store, "/other", "x");
    let job = store.apply(&create("/queue", false, "a", true), NOW).unwrap();
    let dir = store.apply(&create("/queue/", true, "", true), NOW).unwrap();
    assert_eq!(
        json(&job.event),
        r#"{"action":"create","node":{"key":"/queue/00000000000000000002","value":"a","modifiedIndex":2,"createdIndex":2}}"#
    );
    assert_eq!(
        json(&dir.event),
        r#"{"action":"create","node":{"key":"/queue/00000000000000000003","dir":true,"modifiedIndex":3,"createdIndex":3}}"#
    );
}

// ---- update ----

#[test]
fn update_changes_value_and_ttl_of_a_key() {
    let mut store = Store::new();
    set_ttl(&mut store, "/k", "v", NOW + 10 * SECOND);
    let answer = store.apply(&update("/k", "w", Ttl::default()), NOW).unwrap();
    assert_eq!(
        json(&answer.event),
        r#"{"action":"update","node":{"key":"/k","value":"w","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/k","value":"v","expiration":"2026-11-25T22:00:10Z","ttl":10,"modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(store.next_expiration(), None, "an update without TTL makes the key permanent");
    assert_eq!(
        failure(store.apply(&update("/missing", "x", Ttl::default()), NOW)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/missing","index":2}"#
    );
    assert_eq!((stat(&store, "updateSuccess"), stat(&store, "updateFail")), (1, 1));
}

#[test]
fn updating_a_directory_sets_its_ttl_but_keeps_its_modified_index() {
    let mut store = Store::new();
    mkdir(&mut store, "/dd");
    let at = NOW + 100 * SECOND + 774_334_088;
    let answer = store.apply(&update("/dd", "", expires(at)), NOW).unwrap();
    assert_eq!(
        json(&answer.event),
        r#"{"action":"update","node":{"key":"/dd","dir":true,"expiration":"2026-11-25T22:01:40.774334088Z","ttl":101,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/dd","dir":true,"modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(
        get(&mut store, "/dd", false),
        r#"{"action":"get","node":{"key":"/dd","dir":true,"expiration":"2026-11-25T22:01:40.774334088Z","ttl":101,"modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(store.next_expiration(), Some(at));
    // A value on a directory: refused, yet counted as a success by etcd.
    assert_eq!(
        failure(store.apply(&update("/dd", "x", Ttl::default()), NOW)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/dd","index":2}"#
    );
    assert_eq!((stat(&store, "updateSuccess"), stat(&store, "updateFail")), (2, 0));
}

// ---- compare and swap ----

#[test]
fn compare_and_swap_checks_value_and_index() {
    let mut store = Store::new();
    set(&mut store, "/k", "one");
    let swapped = store.apply(&cas("/k", "one", 1, "two"), NOW).unwrap();
    assert_eq!(
        json(&swapped.event),
        r#"{"action":"compareAndSwap","node":{"key":"/k","value":"two","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/k","value":"one","modifiedIndex":1,"createdIndex":1}}"#
    );
    let cases = [
        (cas("/k", "one", 0, "x"), r#""cause":"[one != two]""#),
        (cas("/k", "", 7, "x"), r#""cause":"[7 != 2]""#),
        (cas("/k", "one", 7, "x"), r#""cause":"[one != two] [7 != 2]""#),
    ];
    for (command, cause) in &cases {
        assert_eq!(
            failure(store.apply(command, NOW)),
            format!(r#"{{"errorCode":101,"message":"Compare failed",{cause},"index":2}}"#)
        );
    }
    mkdir(&mut store, "/d");
    assert_eq!(
        failure(store.apply(&cas("/d", "x", 0, "y"), NOW)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/d","index":3}"#
    );
    assert_eq!(
        failure(store.apply(&cas("/none", "x", 0, "y"), NOW)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/none","index":3}"#
    );
    assert_eq!((stat(&store, "compareAndSwapSuccess"), stat(&store, "compareAndSwapFail")), (1, 5));
}

// ---- delete and compare and delete ----

#[test]
fn delete_of_a_key_and_of_directories() {
    let mut store = Store::new();
    set(&mut store, "/k", "v");
    assert_eq!(
        json(&store.apply(&delete("/k", false, false), NOW).unwrap().event),
        r#"{"action":"delete","node":{"key":"/k","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/k","value":"v","modifiedIndex":1,"createdIndex":1}}"#
    );
    set(&mut store, "/q/x", "1");
    assert_eq!(
        failure(store.apply(&delete("/q", false, false), NOW)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/q","index":3}"#
    );
    assert_eq!(
        failure(store.apply(&delete("/q", true, false), NOW)),
        r#"{"errorCode":108,"message":"Directory not empty","cause":"/q","index":3}"#
    );
    assert_eq!(
        failure(store.apply(&delete("/zz", false, false), NOW)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/zz","index":3}"#
    );
    assert_eq!(
        json(&store.apply(&delete("/q", false, true), NOW).unwrap().event),
        r#"{"action":"delete","node":{"key":"/q","dir":true,"modifiedIndex":4,"createdIndex":3},"prevNode":{"key":"/q","dir":true,"modifiedIndex":3,"createdIndex":3}}"#
    );
    assert!(store.get("/q/x", false, false, NOW).is_err());
    // dir=true deletes a key too, and an empty directory.
    set(&mut store, "/f", "v");
    store.apply(&delete("/f", true, false), NOW).unwrap();
    mkdir(&mut store, "/empty");
    store.apply(&delete("/empty", true, false), NOW).unwrap();
    assert_eq!((stat(&store, "deleteSuccess"), stat(&store, "deleteFail")), (4, 3));
}

#[test]
fn compare_and_delete_checks_and_counts_like_etcd() {
    let mut store = Store::new();
    set(&mut store, "/c", "1");
    assert_eq!(
        failure(store.apply(&cad("/c", "2", 0), NOW)),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[2 != 1]","index":1}"#
    );
    assert_eq!(
        failure(store.apply(&cad("/c", "", 9), NOW)),
        r#"{"errorCode":101,"message":"Compare failed","cause":"[9 != 1]","index":1}"#
    );
    mkdir(&mut store, "/d");
    assert_eq!(
        failure(store.apply(&cad("/d", "x", 0), NOW)),
        r#"{"errorCode":102,"message":"Not a file","cause":"/d","index":2}"#
    );
    assert_eq!(
        failure(store.apply(&cad("/none", "x", 0), NOW)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/none","index":2}"#
    );
    assert_eq!(
        json(&store.apply(&cad("/c", "1", 1), NOW).unwrap().event),
        r#"{"action":"compareAndDelete","node":{"key":"/c","modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/c","value":"1","modifiedIndex":1,"createdIndex":1}}"#
    );
    // etcd counts compare failures and "Not a file" as successes.
    assert_eq!((stat(&store, "compareAndDeleteSuccess"), stat(&store, "compareAndDeleteFail")), (4, 1));
}

// ---- TTLs ----

#[test]
fn ttl_prints_the_expiration_and_rounds_seconds_up() {
    let mut store = Store::new();
    let answer = set_ttl(&mut store, "/t", "v", NOW + 5 * SECOND + 120_000_000);
    assert_eq!(
        json(&answer.event),
        r#"{"action":"set","node":{"key":"/t","value":"v","expiration":"2026-11-25T22:00:05.12Z","ttl":6,"modifiedIndex":1,"createdIndex":1}}"#
    );
    let later = store.get("/t", false, false, NOW + 3 * SECOND).unwrap();
    assert_eq!(later.event.node.ttl, 3);
    assert_eq!(store.next_expiration(), Some(NOW + 5 * SECOND + 120_000_000));
}

#[test]
fn a_create_expiring_before_2000_is_permanent() {
    let mut store = Store::new();
    let command =
        Command::Create { key: "/old".into(), dir: false, value: "v".into(), unique: false, ttl: expires(SECOND) };
    let answer = store.apply(&command, NOW).unwrap();
    assert_eq!(answer.event.node.expiration, None);
    assert_eq!(store.next_expiration(), None);
}

#[test]
fn delete_expired_removes_due_nodes_in_deadline_order() {
    let mut store = Store::new();
    set_ttl(&mut store, "/late", "l", NOW + 30 * SECOND);
    set_ttl(&mut store, "/b", "b", NOW + 10 * SECOND);
    set_ttl(&mut store, "/a", "a", NOW + 10 * SECOND);
    set(&mut store, "/keep", "k");
    let mut watch = store.watch("/", true, true, 0).unwrap();

    let cutoff = NOW + 10 * SECOND;
    let last = store.apply(&Command::DeleteExpired { cutoff }, cutoff).unwrap();
    assert_eq!(last.etcd_index, 6);
    let first = watch.events.try_recv().unwrap();
    assert_eq!(
        json(&first),
        r#"{"action":"expire","node":{"key":"/a","modifiedIndex":5,"createdIndex":3},"prevNode":{"key":"/a","value":"a","expiration":"2026-11-25T22:00:10Z","modifiedIndex":3,"createdIndex":3}}"#
    );
    assert_eq!(watch.events.try_recv().unwrap().node.key, "/b");
    assert!(store.get("/a", false, false, NOW).is_err());
    assert!(store.get("/late", false, false, NOW).is_ok());
    assert_eq!(store.next_expiration(), Some(NOW + 30 * SECOND));
    assert_eq!(stat(&store, "expireCount"), 2);

    let nothing = store.apply(&Command::DeleteExpired { cutoff }, cutoff);
    assert_eq!(failure(nothing), r#"{"errorCode":100,"message":"Key not found","index":6}"#);
    assert_eq!(store.index(), 6);
}

#[test]
fn an_expiring_directory_takes_its_subtree_and_deadlines_with_it() {
    let mut store = Store::new();
    let dir = Command::Set { key: "/d".into(), dir: true, value: String::new(), ttl: expires(NOW + SECOND) };
    store.apply(&dir, NOW).unwrap();
    set_ttl(&mut store, "/d/child", "c", NOW + 60 * SECOND);
    let mut child_watch = store.watch("/d/child", false, false, 0).unwrap();
    let answer = store.apply(&Command::DeleteExpired { cutoff: NOW + SECOND }, NOW + SECOND).unwrap();
    assert_eq!(
        json(&answer.event),
        r#"{"action":"expire","node":{"key":"/d","dir":true,"modifiedIndex":3,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"expiration":"2026-11-25T22:00:01Z","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(child_watch.events.try_recv().unwrap().node.key, "/d");
    assert_eq!(store.next_expiration(), None);
    assert_eq!(store.expirations.len(), 0);
}

#[test]
fn replacing_or_deleting_a_key_drops_its_deadline() {
    let mut store = Store::new();
    set_ttl(&mut store, "/a", "1", NOW + SECOND);
    set(&mut store, "/a", "2");
    assert_eq!(store.next_expiration(), None);
    set_ttl(&mut store, "/b/c", "1", NOW + SECOND);
    store.apply(&delete("/b", true, true), NOW).unwrap();
    assert_eq!(store.next_expiration(), None);
    set_ttl(&mut store, "/c", "1", NOW + SECOND);
    store.apply(&cad("/c", "1", 0), NOW).unwrap();
    assert_eq!(store.next_expiration(), None);
    set(&mut store, "/e", "1");
    store.apply(&cas("/e", "1", 0, "2"), NOW).unwrap();
    let with_ttl = Command::CompareAndSwap {
        key: "/e".into(),
        prev_value: String::new(),
        prev_index: 0,
        value: "3".into(),
        ttl: expires(NOW + 2 * SECOND),
    };
    store.apply(&with_ttl, NOW).unwrap();
    assert_eq!(store.next_expiration(), Some(NOW + 2 * SECOND));
    assert_eq!(store.expirations.len(), 1);
}

// ---- refresh ----

#[test]
fn refresh_keeps_the_value_and_tells_no_watcher() {
    let mut store = Store::new();
    set(&mut store, "/c", "1");
    let mut watch = store.watch("/c", false, false, 0).unwrap();
    let at = NOW + 50 * SECOND;
    let refreshed = Command::Set { key: "/c".into(), dir: false, value: String::new(), ttl: refresh(at) };
    assert_eq!(
        json(&store.apply(&refreshed, NOW).unwrap().event),
        r#"{"action":"set","node":{"key":"/c","value":"1","expiration":"2026-11-25T22:00:50Z","ttl":50,"modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/c","value":"1","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(
        json(&store.apply(&update("/c", "", refresh(at)), NOW).unwrap().event),
        r#"{"action":"update","node":{"key":"/c","value":"1","expiration":"2026-11-25T22:00:50Z","ttl":50,"modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/c","value":"1","expiration":"2026-11-25T22:00:50Z","ttl":50,"modifiedIndex":2,"createdIndex":2}}"#
    );
    let cas_refresh = Command::CompareAndSwap {
        key: "/c".into(),
        prev_value: "1".into(),
        prev_index: 0,
        value: String::new(),
        ttl: refresh(at),
    };
    assert_eq!(store.apply(&cas_refresh, NOW).unwrap().event.node.value.as_deref(), Some("1"));
    assert!(watch.events.try_recv().is_err(), "refreshes notify nobody");
    // Nor does the history show them to a watch starting in the past.
    let mut from_past = store.watch("/c", false, false, 2).unwrap();
    assert!(from_past.events.try_recv().is_err());
    assert_eq!(stat(&store, "watchers"), 2);
    set(&mut store, "/c", "2");
    assert_eq!(watch.events.try_recv().unwrap().node.modified_index, 5);

    let missing = Command::Set { key: "/nope".into(), dir: false, value: String::new(), ttl: refresh(at) };
    assert_eq!(
        failure(store.apply(&missing, NOW)),
        r#"{"errorCode":100,"message":"Key not found","cause":"/nope","index":5}"#
    );
}

// ---- watches ----

#[test]
fn a_plain_watch_fires_once_with_the_next_matching_event() {
    let mut store = Store::new();
    set(&mut store, "/other", "x");
    let mut watch = store.watch("/k", false, false, 0).unwrap();
    assert_eq!(watch.start_index, 1);
    assert_eq!(stat(&store, "watchers"), 1);
    set(&mut store, "/other", "y");
    set(&mut store, "/k", "1");
    set(&mut store, "/k", "2");
    let event = watch.events.try_recv().unwrap();
    assert_eq!(json(&event), r#"{"action":"set","node":{"key":"/k","value":"1","modifiedIndex":3,"createdIndex":3}}"#);
    assert!(watch.events.try_recv().is_err());
    assert_eq!(stat(&store, "watchers"), 0);
}

#[test]
fn a_stream_watch_keeps_receiving() {
    let mut store = Store::new();
    let mut watch = store.watch("/k", false, true, 0).unwrap();
    for value in ["1", "2", "3"] {
        set(&mut store, "/k", value);
    }
    let got: Vec<_> = std::iter::from_fn(|| watch.events.try_recv().ok()).map(|e| e.node.value.unwrap()).collect();
    assert_eq!(got, ["1", "2", "3"]);
    assert_eq!(stat(&store, "watchers"), 1);
}

#[test]
fn recursive_watches_see_the_subtree_but_not_hidden_keys() {
    let mut store = Store::new();
    let mut flat = store.watch("/d", false, true, 0).unwrap();
    let mut deep = store.watch("/d", true, true, 0).unwrap();
    set(&mut store, "/d/_hidden", "h");
    set(&mut store, "/d/x/y", "v");
    assert!(flat.events.try_recv().is_err());
    assert_eq!(deep.events.try_recv().unwrap().node.key, "/d/x/y");
    assert!(deep.events.try_recv().is_err());
}

#[test]
fn deleting_a_directory_fires_watches_inside_it() {
    let mut store = Store::new();
    set(&mut store, "/d/x", "1");
    let mut inside = store.watch("/d/x", false, false, 0).unwrap();
    let mut stream_on_dir = store.watch("/d", true, true, 0).unwrap();
    let mut above = store.watch("/", false, false, 0).unwrap();
    store.apply(&delete("/d", true, true), NOW).unwrap();
    let expected = r#"{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}"#;
    assert_eq!(json(&inside.events.try_recv().unwrap()), expected);
    // As in etcd: a stream on the removed key hears the delete twice.
    assert_eq!(json(&stream_on_dir.events.try_recv().unwrap()), expected);
    assert_eq!(json(&stream_on_dir.events.try_recv().unwrap()), expected);
    assert!(stream_on_dir.events.try_recv().is_err());
    assert!(above.events.try_recv().is_err(), "a plain watch on a parent is not fired");

    // Same for a plain key (checked on a real etcd 3.4).
    set(&mut store, "/f", "1");
    let mut stream_on_key = store.watch("/f", false, true, 0).unwrap();
    store.apply(&delete("/f", false, false), NOW).unwrap();
    let twice: Vec<_> = std::iter::from_fn(|| stream_on_key.events.try_recv().ok()).collect();
    assert_eq!(twice.len(), 2);
    assert!(twice.iter().all(|e| e.action == Action::Delete && e.node.modified_index == 4));
}

#[test]
fn a_watch_in_history_is_answered_at_once() {
    let mut store = Store::new();
    set(&mut store, "/k", "1");
    set(&mut store, "/other", "x");
    set(&mut store, "/k", "2");
    let mut watch = store.watch("/k", false, false, 2).unwrap();
    assert_eq!(watch.start_index, 3);
    let event: Event = watch.events.try_recv().unwrap();
    assert_eq!(event.node.modified_index, 3);
    assert_eq!(stat(&store, "watchers"), 0, "history hits are not registered");
    // A future index waits for it.
    let mut future = store.watch("/k", false, false, 5).unwrap();
    set(&mut store, "/k", "3");
    assert!(future.events.try_recv().is_err());
    set(&mut store, "/k", "4");
    assert_eq!(future.events.try_recv().unwrap().node.modified_index, 5);
}

#[test]
fn history_matches_removed_directories_by_string_prefix() {
    let mut store = Store::new();
    set(&mut store, "/foo/x", "1");
    store.apply(&delete("/foo", true, true), NOW).unwrap();
    let mut watch = store.watch("/foobar", false, false, 2).unwrap();
    assert_eq!(watch.events.try_recv().unwrap().node.key, "/foo");
    // And hidden keys are not filtered from history.
    set(&mut store, "/h/_x", "1");
    let mut hidden = store.watch("/h", true, false, 3).unwrap();
    assert_eq!(hidden.events.try_recv().unwrap().node.key, "/h/_x");
}

#[test]
fn an_index_older_than_the_history_is_cleared() {
    let mut store = Store::new();
    for i in 0..1005 {
        set(&mut store, "/load", &i.to_string());
    }
    assert_eq!(
        json(&store.watch("/load", false, false, 5).unwrap_err()),
        r#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [6/5]","index":1005}"#
    );
    let mut oldest = store.watch("/load", false, false, 6).unwrap();
    assert_eq!(oldest.events.try_recv().unwrap().node.modified_index, 6);
}

#[test]
fn watchers_whose_receiver_is_dropped_are_removed() {
    let mut store = Store::new();
    let watch = store.watch("/k", false, true, 0).unwrap();
    assert_eq!(stat(&store, "watchers"), 1);
    drop(watch);
    assert_eq!(stat(&store, "watchers"), 0);
    set(&mut store, "/k", "1");
    assert_eq!(store.hub.held(), 0, "removed when an event finds it gone");
    for i in 0..500 {
        drop(store.watch(&format!("/quiet/{i}"), false, false, 0).unwrap());
    }
    let kept = store.watch("/k", false, false, 0).unwrap();
    assert_eq!(stat(&store, "watchers"), 1);
    assert!(store.hub.held() < 100, "abandoned watchers are swept, held {}", store.hub.held());
    drop(kept);
}

#[test]
fn a_stream_that_falls_behind_is_dropped() {
    let mut store = Store::new();
    let mut watch = store.watch("/k", false, true, 0).unwrap();
    for i in 0..=WATCH_BUFFER {
        set(&mut store, "/k", &i.to_string());
    }
    assert_eq!(stat(&store, "watchers"), 0);
    let received = std::iter::from_fn(|| watch.events.try_recv().ok()).count();
    assert_eq!(received, WATCH_BUFFER);
}

// ---- stats ----

#[test]
fn stats_json_has_etcd_fields_in_order() {
    let mut store = Store::new();
    set(&mut store, "/a", "1");
    store.get("/a", false, false, NOW).unwrap();
    let _watch = store.watch("/a", false, false, 0).unwrap();
    assert_eq!(
        json(&store.stats_json()),
        r#"{"getsSuccess":1,"getsFail":0,"setsSuccess":1,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":1}"#
    );
}

// ---- snapshot ----

fn populated() -> Store {
    let mut store = Store::new();
    set(&mut store, "/a/b/c", "deep");
    set(&mut store, "/a/_h", "hidden");
    set(&mut store, "/e", "");
    set_ttl(&mut store, "/t", "ttl", NOW + 30 * SECOND);
    let dir = Command::Set { key: "/td".into(), dir: true, value: String::new(), ttl: expires(NOW + 20 * SECOND) };
    store.apply(&dir, NOW).unwrap();
    store.apply(&update("/e", "", refresh(NOW + 40 * SECOND)), NOW).unwrap();
    store.apply(&delete("/a/b", true, true), NOW).unwrap();
    let _ = store.get("/missing", false, false, NOW);
    store
}

#[test]
fn a_snapshot_restores_the_same_store() {
    let mut original = populated();
    let bytes = original.snapshot();
    let mut restored = Store::restore(&bytes).unwrap();
    assert_eq!(restored.index(), original.index());
    assert_eq!(restored.next_expiration(), Some(NOW + 20 * SECOND));
    assert_eq!(restored.stats_json(), original.stats_json());
    assert_eq!(restored.root, original.root);
    assert_eq!(restored.expirations, original.expirations);
    assert_eq!(restored.history, original.history);
    assert_eq!(get(&mut restored, "/", true), get(&mut original, "/", true));
    // History survives: a watch from index 1 sees the first write.
    let mut watch = restored.watch("/a", true, false, 1).unwrap();
    assert_eq!(watch.events.try_recv().unwrap().node.key, "/a/b/c");
    // Expiry goes on from the restored deadlines.
    restored.apply(&Command::DeleteExpired { cutoff: NOW + 60 * SECOND }, NOW).unwrap();
    assert_eq!(restored.next_expiration(), None);
    assert_eq!(
        restored.snapshot(),
        Store::restore(&restored.snapshot()).unwrap().snapshot(),
        "snapshots are deterministic"
    );
}

#[test]
fn corrupt_snapshots_are_rejected_with_the_reason() {
    let bytes = populated().snapshot();
    let reason = |bytes: &[u8]| match Store::restore(bytes) {
        Err(SnapshotError(why)) => why,
        other => panic!("expected a corrupt snapshot, got {other:?}"),
    };
    assert!(reason(&[]).contains("shorter than"));
    assert!(reason(&bytes[..5]).contains("shorter than"));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(reason(&magic).contains("bad magic"));
    let mut format = bytes.clone();
    format[4] = 9;
    assert!(reason(&format).contains("unknown format 9"));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    assert!(reason(&flipped).contains("checksum mismatch"));
    assert!(reason(&bytes[..bytes.len() - 3]).contains("checksum mismatch"));
    // A payload with a valid checksum that is not a store.
    let mut garbage = b"FV2S\x01".to_vec();
    let payload = [0xff_u8; 12];
    garbage.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    garbage.extend_from_slice(&payload);
    assert!(reason(&garbage).contains("undecodable"));
    let mut long = bytes[9..].to_vec();
    long.push(0);
    let mut trailing = b"FV2S\x01".to_vec();
    trailing.extend_from_slice(&crc32fast::hash(&long).to_le_bytes());
    trailing.extend_from_slice(&long);
    assert!(reason(&trailing).contains("stray bytes"));
}

#[test]
fn fuzzed_snapshots_never_panic() {
    let bytes = populated().snapshot();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut mutated = bytes[9..].to_vec();
        let at = (seed as usize) % mutated.len();
        mutated[at] = (seed >> 32) as u8;
        mutated.truncate(mutated.len() - (seed >> 40) as usize % 4);
        let mut framed = b"FV2S\x01".to_vec();
        framed.extend_from_slice(&crc32fast::hash(&mutated).to_le_bytes());
        framed.extend_from_slice(&mutated);
        let _ = Store::restore(&framed);
    }
}
