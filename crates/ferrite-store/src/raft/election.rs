//! When a member campaigns: a randomized election timer drawn anew every
//! time it is reset, as etcd's (`resetRandomizedElectionTimeout`).
//!
//! openraft 0.9 draws a member's random election timeout once, when the
//! member starts, and waits that same time before every campaign. Two
//! followers whose draws happen to lie within a vote's round trip of each
//! other then split the vote after their leader dies, and split it again
//! at every retry, since each retries after the same time as before; only
//! scheduling noise ends it. (openraft 0.10 draws again each time.)
//!
//! So openraft's own timer is off (`Config::enable_elect`), and this one
//! drives the campaigns through `Raft::trigger().elect()`. With E the
//! election timeout (`--election-timeout`):
//! - Hearing from a leader it accepts (an AppendEntries or snapshot that
//!   does not answer with a higher vote), or granting a vote, resets it to
//!   a random time in [E, 2E), as etcd: the first E is the leader's lease,
//!   within which the other members would refuse the vote anyway.
//! - After a campaign that did not win, the next one comes after a random
//!   [E/2, E): the leases are over by then.
//! - A member that learned from a vote's answer that another member's log
//!   is longer (and so that it cannot win) backs off 2E before it campaigns
//!   again, as openraft's own timer does. Without that, the member with the
//!   shorter log, if it happens to campaign first, takes each new term
//!   before the member that can win: openraft 0.9 does not move a voter to
//!   the term of a vote it refuses for the log, so that member's own
//!   campaign then asks for the same term and is refused too. The fault
//!   tests saw that repeat for 5 s.
//! - A member starts as if it had just heard from a leader when it has a
//!   committed vote (a restart under a live leader), and as after a
//!   campaign otherwise (a new cluster).
//! - A single voter campaigns at once, as openraft does for one.
//! - A leader or a learner never campaigns (openraft ignores the trigger
//!   for both too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::ServerState;
use rand::Rng;
use tokio::time::Instant;

use super::types::{NodeId, Raft, RaftMetrics, Vote};

/// What resets the election timer: the network's side. Cheap to clone.
///
/// Every accepted AppendEntries resets the timer, thousands a second under
/// load, so a reset is one atomic store: the timer task reads it when it
/// wakes, instead of being woken by each.
#[derive(Debug, Clone)]
pub struct Heard {
    /// The instant `last` counts from.
    epoch: Instant,
    /// When the member last heard from a leader or granted a vote, in
    /// nanoseconds after `epoch`; 0 for never.
    last: Arc<AtomicU64>,
    greater_log: Arc<AtomicBool>,
}

impl Default for Heard {
    fn default() -> Heard {
        Heard { epoch: Instant::now(), last: Arc::default(), greater_log: Arc::default() }
    }
}

impl Heard {
    /// The member heard from a leader, or granted a vote: reset the timer.
    pub fn now(&self) {
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        self.last.fetch_max(since, Ordering::Relaxed);
    }

    /// When the member last heard from a leader or granted a vote.
    fn last(&self) -> Option<Instant> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.epoch + Duration::from_nanos(since)),
        }
    }

    /// Resets the timer when this answer to an AppendEntries accepts its
    /// sender as the leader.
    pub fn append<E>(&self, answer: &Result<AppendEntriesResponse<NodeId>, E>) {
        if matches!(answer, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.now();
        }
    }

    /// Resets the timer when this answer to a snapshot accepts its sender.
    pub fn snapshot<E>(&self, answer: &Result<InstallSnapshotResponse<NodeId>, E>, request_vote: &Vote) {
        if matches!(answer, Ok(r) if r.vote <= *request_vote) {
            self.now();
        }
    }

    /// Resets the timer when this answer to a vote request grants it.
    pub fn vote<E>(&self, answer: &Result<VoteResponse<NodeId>, E>) {
        if matches!(answer, Ok(r) if r.vote_granted) {
            self.now();
        }
    }

    /// Notes the answer to this member's own vote request: a refusal from
    /// a member with a longer log makes it back off.
    pub fn vote_answered(&self, request: &VoteRequest<NodeId>, answer: &VoteResponse<NodeId>) {
        if !answer.vote_granted && answer.last_log_id > request.last_log_id {
            self.greater_log.store(true, Ordering::Relaxed);
        }
    }
}

/// When the next campaign is due.
#[derive(Debug)]
struct Timer {
    /// The election timeout, E.
    election: Duration,
    reset: Instant,
    wait: Duration,
    /// Whether the member campaigned (or passed a campaign up) since it
    /// last heard from a leader.
    campaigned: bool,
}

impl Timer {
    fn new(election: Duration, at: Instant, follows_leader: bool) -> Timer {
        let mut timer = Timer { election, reset: at, wait: Duration::ZERO, campaigned: false };
        if follows_leader {
            timer.heard(at);
        } else {
            timer.wait = timer.draw(election / 2, election);
        }
        timer
    }

    fn draw(&self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        rand::thread_rng().gen_range(min..max)
    }

    /// Heard from a leader, or granted a vote, at `at`: [E, 2E).
    fn heard(&mut self, at: Instant) {
        self.reset = at;
        self.wait = self.draw(self.election, 2 * self.election);
        self.campaigned = false;
    }

    /// Campaigned, or had nothing to campaign for, at `at`: [E/2, E).
    fn campaigned(&mut self, at: Instant) {
        self.reset = at;
        self.wait = self.draw(self.election / 2, self.election);
        self.campaigned = true;
    }

    /// Learned at `at` that another member's log is longer: 2E.
    fn back_off(&mut self, at: Instant) {
        self.reset = at;
        self.wait = 2 * self.election;
        self.campaigned = true;
    }

    /// When to campaign.
    fn due(&self, single_voter: bool) -> Instant {
        if single_voter && !self.campaigned {
            self.reset
        } else {
            self.reset + self.wait
        }
    }
}

/// Runs the election timer of `raft` until raft stops. Start it only on a
/// raft whose own timer is off (`enable_elect: false`).
pub async fn run(raft: Raft, heard: Heard, election: Duration) {
    let metrics = raft.metrics();
    let follows_leader = metrics.borrow().vote.is_committed();
    // From now, not from when `heard` was made: replaying a long log in
    // between must not count as silence from the leader.
    let mut timer = Timer::new(election, Instant::now(), follows_leader);
    loop {
        let single_voter = voters(&metrics.borrow()).1 == 1;
        tokio::time::sleep_until(timer.due(single_voter)).await;
        if let Some(at) = heard.last().filter(|at| *at > timer.reset) {
            // A leader spoke (or a vote was granted) since the reset.
            timer.heard(at);
            heard.greater_log.store(false, Ordering::Relaxed);
            continue;
        }
        let campaign = {
            let m = metrics.borrow();
            if m.state == ServerState::Shutdown {
                return;
            }
            voters(&m).0 && m.state != ServerState::Leader
        };
        if !campaign {
            timer.campaigned(Instant::now());
            continue;
        }
        if heard.greater_log.swap(false, Ordering::Relaxed) {
            tracing::info!("another member has a longer log: backing off before campaigning again");
            timer.back_off(Instant::now());
            continue;
        }
        tracing::info!(
            after_ms = u64::try_from(timer.reset.elapsed().as_millis()).unwrap_or(u64::MAX),
            "no word from a leader: campaigning"
        );
        if raft.trigger().elect().await.is_err() {
            return;
        }
        timer.campaigned(Instant::now());
    }
}

/// Whether this member votes, and how many voters there are.
fn voters(m: &RaftMetrics) -> (bool, usize) {
    let membership = m.membership_config.membership();
    (membership.voter_ids().any(|id| id == m.id), membership.voter_ids().count())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::testing::log_id;

    use super::*;

    const E: Duration = Duration::from_millis(1000);

    #[test]
    fn every_reset_draws_the_wait_again_within_its_range() {
        let at = Instant::now();
        let mut timer = Timer::new(E, at, true);
        let mut drawn = BTreeSet::new();
        for _ in 0..64 {
            assert!((E..2 * E).contains(&timer.wait), "after a leader's word: {:?}", timer.wait);
            drawn.insert(timer.wait);
            timer.heard(at);
        }
        // openraft 0.9 kept one draw for the member's life: two members
        // that drew close split every vote between them.
        assert!(drawn.len() > 32, "{} distinct waits in 64 resets", drawn.len());
        drawn.clear();
        for _ in 0..64 {
            timer.campaigned(at);
            assert!((E / 2..E).contains(&timer.wait), "after a campaign: {:?}", timer.wait);
            drawn.insert(timer.wait);
        }
        assert!(drawn.len() > 32, "{} distinct waits in 64 campaigns", drawn.len());
    }

    #[test]
    fn a_member_starts_as_a_follower_of_its_committed_vote_or_as_after_a_campaign() {
        let at = Instant::now();
        let restarted = Timer::new(E, at, true);
        assert!(restarted.due(false) >= at + E);
        let fresh = Timer::new(E, at, false);
        assert!(fresh.due(false) >= at + E / 2 && fresh.due(false) < at + E);
    }

    #[test]
    fn a_single_voter_campaigns_at_once_but_not_again_at_once() {
        let at = Instant::now();
        let mut timer = Timer::new(E, at, false);
        assert_eq!(timer.due(true), at);
        timer.campaigned(at);
        assert_eq!(timer.due(true), at + timer.wait);
        timer.heard(at);
        assert_eq!(timer.due(true), at);
    }

    #[test]
    fn a_member_refused_for_a_shorter_log_backs_off() {
        let at = Instant::now();
        let mut timer = Timer::new(E, at, false);
        timer.back_off(at);
        assert_eq!(timer.due(false), at + 2 * E);

        let heard = Heard::default();
        let request = VoteRequest::new(Vote::new(3, 1), Some(log_id(2, 2, 10)));
        heard.vote_answered(&request, &VoteResponse::new(Vote::new(3, 2), Some(log_id(2, 2, 10)), false));
        assert!(!heard.greater_log.load(Ordering::Relaxed), "an equal log is no reason to back off");
        heard.vote_answered(&request, &VoteResponse::new(Vote::new(3, 1), Some(log_id(2, 2, 12)), true));
        assert!(!heard.greater_log.load(Ordering::Relaxed), "a granted vote is no reason to back off");
        heard.vote_answered(&request, &VoteResponse::new(Vote::new(2, 2), Some(log_id(2, 2, 12)), false));
        assert!(heard.greater_log.load(Ordering::Relaxed));
    }

    #[test]
    fn only_an_answer_that_accepts_the_sender_resets_the_timer() {
        let heard = Heard::default();
        let refused: Result<AppendEntriesResponse<NodeId>, ()> =
            Ok(AppendEntriesResponse::HigherVote(Vote::new_committed(9, 3)));
        heard.append(&refused);
        heard.append(&Err::<AppendEntriesResponse<NodeId>, _>(()));
        heard.vote(&Ok::<_, ()>(VoteResponse::new(Vote::new(5, 3), None, false)));
        let request = Vote::new_committed(4, 2);
        heard.snapshot(&Ok::<_, ()>(InstallSnapshotResponse { vote: Vote::new_committed(5, 3) }), &request);
        assert!(heard.last().is_none(), "a refusal reset the timer");

        heard.append(&Ok::<_, ()>(AppendEntriesResponse::Conflict));
        let appended = heard.last().expect("an accepted append resets the timer");
        std::thread::sleep(Duration::from_millis(1));
        heard.vote(&Ok::<_, ()>(VoteResponse::new(Vote::new(5, 3), None, true)));
        let granted = heard.last().unwrap();
        assert!(granted > appended, "a granted vote resets the timer");
        std::thread::sleep(Duration::from_millis(1));
        heard.snapshot(&Ok::<_, ()>(InstallSnapshotResponse { vote: request }), &request);
        assert!(heard.last().unwrap() > granted, "an accepted snapshot resets the timer");
    }
}
