//! A linearizability checker for histories of etcd v2 key operations.
//!
//! A test records what its clients did ([`Recorder`]): for every operation
//! the key, what was asked ([`Input`]), what came back ([`Output`]) and when
//! it was invoked and when it returned, on one monotonic clock. [`check`]
//! then decides whether some order of the operations, each placed at an
//! instant between its invocation and its return, explains every answer
//! under the model of a single etcd v2 key.
//!
//! # Model
//!
//! Every key starts absent and is independent of the others, so the history
//! is split by key and each key is checked on its own (linearizability is
//! compositional). A key's state is its value or absence:
//!
//! | input                     | [`Output::Ok`]                   | [`Output::Refused`]            |
//! |---------------------------|----------------------------------|--------------------------------|
//! | `Read`                    | use [`Output::Read`]             | –                              |
//! | `Write { value }`         | sets `value`                     | –                              |
//! | `CompareAndSwap { .. }`   | key held `expected`; sets `value`| key absent or not `expected`   |
//! | `Create { value }`        | key was absent; sets `value`     | key existed                    |
//! | `Delete`                  | key existed; removes it          | key was absent                 |
//!
//! An operation whose outcome is unknown ([`Output::Unknown`]: a timeout, a
//! connection broken after the request was sent, a 5xx) never returns: it
//! may take effect at any instant after its invocation, or never. When it
//! does, it does what the server would have done in that state (a CAS swaps
//! only if the key holds `expected`). A read with an unknown outcome says
//! nothing and is dropped.
//!
//! # Search
//!
//! Wing & Gong's search as improved by Lowe, with the memoization Porcupine
//! and Knossos use: the invocations and returns of a key form a list sorted
//! by time (invocations before returns at equal instants, so touching
//! operations count as concurrent). The search walks the list, linearizes
//! an invoked operation whose step the model accepts, removes it from the
//! list and starts over; when it reaches the return of an operation not
//! linearized yet, that operation should have taken effect already, so it
//! backtracks. A configuration (set of linearized operations as a bitmask,
//! state) seen before is not explored twice. The search stops after
//! [`Checker::step_limit`] steps with [`Verdict::Unknown`] instead of hanging
//! on a pathological history.
//!
//! When no order exists, the [`Violation`] names the key, the end of the
//! longest order found, the state it leaves, the operation that had to take
//! effect next and why none of the candidates could.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Search steps per key before [`check`] gives up with [`Verdict::Unknown`].
pub const DEFAULT_STEP_LIMIT: u64 = 5_000_000;

/// How many linearized operations a [`Violation`] shows before the failure.
const CONTEXT_OPS: usize = 6;

/// How many candidate operations a [`Violation`]'s text lists.
const CANDIDATES_SHOWN: usize = 12;

/// What a client asked of one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// `GET` (with `quorum=true`: plain v2 GETs are not linearizable).
    Read,
    /// `PUT value=…`
    Write { value: String },
    /// `PUT value=…&prevValue=expected`
    CompareAndSwap { expected: String, value: String },
    /// `PUT value=…&prevExist=false`
    Create { value: String },
    /// `DELETE`
    Delete,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Output {
    /// A read's answer: the value, or `None` for "Key not found".
    Read(Option<String>),
    /// A write, CAS, create or delete took effect (2xx).
    Ok,
    /// The precondition did not hold and nothing changed: compare failed
    /// (101) or key not found (100) for a CAS, key exists (105) for a
    /// create, key not found (100) for a delete.
    Refused,
    /// No answer: the operation may take effect at any time after its
    /// invocation, or never.
    Unknown,
}

/// One operation of a history. Times are offsets on one monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (for the report only).
    pub client: usize,
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub invoked: Duration,
    /// When the answer arrived; ignored when the output is [`Output::Unknown`].
    pub returned: Duration,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let returned = match self.output {
            Output::Unknown => "?".to_owned(),
            _ => format!("{:.3}", self.returned.as_secs_f64()),
        };
        write!(f, "client {} [{:.3}s..{returned}s] ", self.client, self.invoked.as_secs_f64())?;
        match &self.input {
            Input::Read => write!(f, "read")?,
            Input::Write { value } => write!(f, "write {value:?}")?,
            Input::CompareAndSwap { expected, value } => write!(f, "cas {expected:?} -> {value:?}")?,
            Input::Create { value } => write!(f, "create {value:?}")?,
            Input::Delete => write!(f, "delete")?,
        }
        match &self.output {
            Output::Read(Some(value)) => write!(f, " = {value:?}"),
            Output::Read(None) => write!(f, " = absent"),
            Output::Ok => write!(f, " ok"),
            Output::Refused => write!(f, " refused"),
            Output::Unknown => write!(f, " (outcome unknown)"),
        }
    }
}

/// Records a history as clients run, from any number of tasks.
#[derive(Debug, Clone)]
pub struct Recorder {
    epoch: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

/// An operation invoked but not completed; hand it to [`Recorder::complete`].
#[derive(Debug)]
#[must_use = "an invocation is recorded only when completed"]
pub struct Invocation {
    client: usize,
    key: String,
    input: Input,
    invoked: Duration,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self { epoch: Instant::now(), operations: Arc::default() }
    }

    /// Notes the invocation time. Call it just before sending the request.
    pub fn invoke(&self, client: usize, key: &str, input: Input) -> Invocation {
        Invocation { client, key: key.to_owned(), input, invoked: self.epoch.elapsed() }
    }

    /// Notes the answer (or [`Output::Unknown`]) and records the operation.
    /// Call it as soon as the answer arrived.
    pub fn complete(&self, invocation: Invocation, output: Output) {
        let returned = self.epoch.elapsed();
        let Invocation { client, key, input, invoked } = invocation;
        let operation = Operation { client, key, input, output, invoked, returned };
        self.operations.lock().unwrap_or_else(|e| e.into_inner()).push(operation);
    }

    /// Every operation completed so far.
    pub fn history(&self) -> Vec<Operation> {
        self.operations.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A history the checker cannot judge because it is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("{operation}: a {kind} cannot have this output")]
    OutputMismatch { operation: Box<Operation>, kind: &'static str },
    #[error("{operation}: returned before it was invoked")]
    ReturnedBeforeInvoked { operation: Box<Operation> },
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations have a legal order.
    Linearizable,
    /// One key's operations have none.
    NotLinearizable(Box<Violation>),
    /// The search for `key` hit the step limit; nothing else failed.
    Unknown { key: String, steps: u64 },
}

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// How many operations the longest legal order found holds.
    pub linearized_count: usize,
    /// Its last few operations, in order.
    pub linearized_tail: Vec<Operation>,
    /// The key's value after them.
    pub state: Option<String>,
    /// The operation that returned before it could be placed.
    pub overdue: Operation,
    /// The operations that wrote the value it read or expected, if any.
    pub writers: Vec<Operation>,
    /// The operations that could have come next, with why each could not.
    pub candidates: Vec<(Operation, String)>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable.", self.key)?;
        writeln!(f, "The longest legal order found places {} operations; it ends with:", self.linearized_count)?;
        if self.linearized_tail.is_empty() {
            writeln!(f, "  (nothing: the key is still absent)")?;
        }
        for op in &self.linearized_tail {
            writeln!(f, "  {op}")?;
        }
        writeln!(f, "leaving the key {}.", describe_state(self.state.as_deref()))?;
        writeln!(f, "Next, this operation has returned and must already have taken effect:")?;
        writeln!(f, "  {}", self.overdue)?;
        for op in &self.writers {
            writeln!(f, "  (the value it names was written by: {op})")?;
        }
        writeln!(f, "but no operation in flight at that point can come next:")?;
        for (op, why) in self.candidates.iter().take(CANDIDATES_SHOWN) {
            writeln!(f, "  {op}: {why}")?;
        }
        if self.candidates.len() > CANDIDATES_SHOWN {
            writeln!(f, "  … and {} more", self.candidates.len() - CANDIDATES_SHOWN)?;
        }
        Ok(())
    }
}

fn describe_state(state: Option<&str>) -> String {
    match state {
        Some(value) => format!("holding {value:?}"),
        None => "absent".to_owned(),
    }
}

/// Checks a history with the default step limit.
pub fn check(history: &[Operation]) -> Result<Verdict, HistoryError> {
    Checker::default().check(history)
}

/// A configured checker.
#[derive(Debug, Clone)]
pub struct Checker {
    step_limit: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Self { step_limit: DEFAULT_STEP_LIMIT }
    }
}

impl Checker {
    /// Search steps per key before giving up with [`Verdict::Unknown`].
    pub fn step_limit(mut self, steps: u64) -> Self {
        self.step_limit = steps;
        self
    }

    /// Validates the history, splits it by key and searches each key. The
    /// first key found not linearizable is reported.
    pub fn check(&self, history: &[Operation]) -> Result<Verdict, HistoryError> {
        let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
        for op in history {
            validate(op)?;
            let uninformative = op.input == Input::Read && op.output == Output::Unknown;
            if !uninformative {
                by_key.entry(op.key.as_str()).or_default().push(op);
            }
        }
        let mut unknown = None;
        for (key, ops) in by_key {
            match KeySearch::new(&ops).run(self.step_limit) {
                KeyVerdict::Linearizable => {}
                KeyVerdict::Violation(v) => return Ok(Verdict::NotLinearizable(v)),
                KeyVerdict::GaveUp(steps) => {
                    unknown.get_or_insert(Verdict::Unknown { key: key.to_owned(), steps });
                }
            }
        }
        Ok(unknown.unwrap_or(Verdict::Linearizable))
    }
}

fn validate(op: &Operation) -> Result<(), HistoryError> {
    let kind = match op.input {
        Input::Read => "read",
        Input::Write { .. } => "write",
        Input::CompareAndSwap { .. } => "compare-and-swap",
        Input::Create { .. } => "create",
        Input::Delete => "delete",
    };
    let fits = match (&op.input, &op.output) {
        (_, Output::Unknown) => true,
        (Input::Read, output) => matches!(output, Output::Read(_)),
        (Input::Write { .. }, output) => *output == Output::Ok,
        (_, output) => matches!(output, Output::Ok | Output::Refused),
    };
    if !fits {
        return Err(HistoryError::OutputMismatch { operation: Box::new(op.clone()), kind });
    }
    if op.output != Output::Unknown && op.returned < op.invoked {
        return Err(HistoryError::ReturnedBeforeInvoked { operation: Box::new(op.clone()) });
    }
    Ok(())
}

/// A key's value with strings interned: `None` is absent.
type State = Option<u32>;

/// The model's input and output with values interned.
#[derive(Debug, Clone, Copy)]
enum Step {
    Read(State),
    Write(u32),
    Cas { expected: u32, value: u32, outcome: Outcome },
    Create { value: u32, outcome: Outcome },
    Delete(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Refused,
    Unknown,
}

impl Step {
    /// The state after this step, or `None` if the answer contradicts `state`.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(seen) => (seen == state).then_some(state),
            Step::Write(value) => Some(Some(value)),
            Step::Cas { expected, value, outcome } => {
                let holds = state == Some(expected);
                precondition(holds, outcome, Some(value), state)
            }
            Step::Create { value, outcome } => precondition(state.is_none(), outcome, Some(value), state),
            Step::Delete(outcome) => precondition(state.is_some(), outcome, None, state),
        }
    }

    /// Why the step contradicts `state`, in words.
    fn contradiction(self, state: State, values: &[String]) -> String {
        let name = |v: u32| format!("{:?}", values[v as usize]);
        let now = describe_state(state.map(|v| values[v as usize].as_str()));
        match self {
            Step::Read(_) => format!("the key is {now} at that point"),
            Step::Cas { expected, outcome: Outcome::Ok, .. } => {
                format!("it needs the key holding {}, but the key is {now}", name(expected))
            }
            Step::Cas { expected, .. } => format!("refused, but the key is holding {}", name(expected)),
            Step::Create { outcome: Outcome::Ok, .. } => format!("it needs the key absent, but the key is {now}"),
            Step::Create { .. } => "refused as existing, but the key is absent".to_owned(),
            Step::Delete(Outcome::Ok) => "it needs the key to exist, but the key is absent".to_owned(),
            Step::Delete(_) => format!("refused as not found, but the key is {now}"),
            Step::Write(_) => "a write always fits".to_owned(),
        }
    }
}

/// A step guarded by `holds`: applied when it held, nothing changed when
/// it was refused, either (as the state decides) when unknown.
fn precondition(holds: bool, outcome: Outcome, after: State, state: State) -> Option<State> {
    match (outcome, holds) {
        (Outcome::Ok, true) | (Outcome::Unknown, true) => Some(after),
        (Outcome::Refused, false) | (Outcome::Unknown, false) => Some(state),
        (Outcome::Ok, false) | (Outcome::Refused, true) => None,
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// One entry of the time-ordered list: an invocation or a return.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// The other entry of the same operation.
    pair: usize,
    prev: usize,
    next: usize,
}

/// Which candidates a level of the search tries: operations with a known
/// outcome first, then those of unknown outcome. Placing an operation that
/// may never have happened is rarely what explains the next answer, and
/// trying it first would make the search wander through every subset of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Known,
    Unknown,
}

enum KeyVerdict {
    Linearizable,
    Violation(Box<Violation>),
    GaveUp(u64),
}

/// The search over one key's operations.
struct KeySearch<'a> {
    ops: Vec<&'a Operation>,
    steps: Vec<Step>,
    unknown: Vec<bool>,
    values: Vec<String>,
    entries: Vec<Entry>,
}

impl<'a> KeySearch<'a> {
    fn new(ops: &[&'a Operation]) -> Self {
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut values = Vec::new();
        let mut intern = |value: &str| -> u32 {
            *interned.entry(value.to_owned()).or_insert_with(|| {
                values.push(value.to_owned());
                u32::try_from(values.len() - 1).unwrap_or(u32::MAX)
            })
        };
        let mut steps = Vec::with_capacity(ops.len());
        for op in ops {
            let outcome = match op.output {
                Output::Refused => Outcome::Refused,
                Output::Unknown => Outcome::Unknown,
                _ => Outcome::Ok,
            };
            steps.push(match (&op.input, &op.output) {
                (Input::Read, Output::Read(seen)) => Step::Read(seen.as_deref().map(&mut intern)),
                (Input::Read, _) => unreachable!("validated: unknown reads are dropped, others carry a value"),
                (Input::Write { value }, _) => Step::Write(intern(value)),
                (Input::CompareAndSwap { expected, value }, _) => {
                    Step::Cas { expected: intern(expected), value: intern(value), outcome }
                }
                (Input::Create { value }, _) => Step::Create { value: intern(value), outcome },
                (Input::Delete, _) => Step::Delete(outcome),
            });
        }
        let unknown: Vec<bool> = ops.iter().map(|op| op.output == Output::Unknown).collect();

        // (time, invocation first, op): unknown operations return after everything.
        let mut events: Vec<(Duration, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoked, false, i));
            events.push((if unknown[i] { Duration::MAX } else { op.returned }, true, i));
        }
        events.sort();
        let mut entries = vec![Entry { op: NIL, is_call: false, pair: NIL, prev: NIL, next: NIL }];
        let mut call_entry = vec![NIL; ops.len()];
        for (_, is_return, op) in events {
            let index = entries.len();
            let pair = if is_return { call_entry[op] } else { NIL };
            if is_return {
                entries[pair].pair = index;
            } else {
                call_entry[op] = index;
            }
            entries[index - 1].next = index;
            entries.push(Entry { op, is_call: !is_return, pair, prev: index - 1, next: NIL });
        }
        Self { ops: ops.to_vec(), steps, unknown, values, entries }
    }

    /// Removes an operation's invocation and return from the list.
    fn lift(&mut self, call: usize) {
        for e in [call, self.entries[call].pair] {
            let Entry { prev, next, .. } = self.entries[e];
            self.entries[prev].next = next;
            if next != NIL {
                self.entries[next].prev = prev;
            }
        }
    }

    /// Puts them back (the reverse of [`KeySearch::lift`]).
    fn unlift(&mut self, call: usize) {
        for e in [self.entries[call].pair, call] {
            let Entry { prev, next, .. } = self.entries[e];
            self.entries[prev].next = e;
            if next != NIL {
                self.entries[next].prev = e;
            }
        }
    }

    fn run(mut self, step_limit: u64) -> KeyVerdict {
        let words = self.ops.len().div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
        // (invocation entry, state before it, phase it was taken in)
        let mut stack: Vec<(usize, State, Phase)> = Vec::new();
        let mut state: State = None;
        let mut phase = Phase::Known;
        // The report is about the order placing the most operations of
        // known outcome (those of unknown outcome only pad it).
        let mut known_depth = 0usize;
        let mut deepest: Option<(usize, Box<Violation>)> = None;
        let mut entry = self.entries[HEAD].next;
        let mut steps = 0u64;
        loop {
            if entry == NIL {
                return KeyVerdict::Linearizable;
            }
            steps += 1;
            if steps > step_limit {
                return KeyVerdict::GaveUp(steps - 1);
            }
            let Entry { op, is_call, next, .. } = self.entries[entry];
            if is_call {
                let eligible = self.unknown[op] == (phase == Phase::Unknown);
                if let Some(after) = self.steps[op].apply(state).filter(|_| eligible) {
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), after)) {
                        stack.push((entry, state, phase));
                        known_depth += usize::from(!self.unknown[op]);
                        state = after;
                        phase = Phase::Known;
                        self.lift(entry);
                        entry = self.entries[HEAD].next;
                        continue;
                    }
                    linearized[op / 64] &= !(1 << (op % 64));
                }
                entry = next;
            } else if self.unknown[op] {
                // Only operations that may never take effect remain.
                return KeyVerdict::Linearizable;
            } else if phase == Phase::Known {
                // Every known candidate failed: try those of unknown outcome
                // invoked before this return.
                if deepest.as_ref().is_none_or(|(best, _)| known_depth > *best) {
                    deepest = Some((known_depth, self.explain(&stack, state, entry)));
                }
                phase = Phase::Unknown;
                entry = self.entries[HEAD].next;
            } else {
                let Some((call, before, taken_in)) = stack.pop() else {
                    let report = deepest.map(|(_, v)| v);
                    return KeyVerdict::Violation(report.unwrap_or_else(|| self.explain(&stack, state, entry)));
                };
                let op = self.entries[call].op;
                known_depth -= usize::from(!self.unknown[op]);
                linearized[op / 64] &= !(1 << (op % 64));
                state = before;
                phase = taken_in;
                self.unlift(call);
                entry = self.entries[call].next;
            }
        }
    }

    /// The report for a dead end: `overdue` is the return entry reached
    /// while its operation was not linearized.
    fn explain(&self, stack: &[(usize, State, Phase)], state: State, overdue: usize) -> Box<Violation> {
        let start = stack.len().saturating_sub(CONTEXT_OPS);
        let linearized_tail =
            stack[start..].iter().map(|(call, _, _)| self.ops[self.entries[*call].op].clone()).collect();
        let mut candidates = Vec::new();
        let mut e = self.entries[HEAD].next;
        while e != overdue && e != NIL {
            let Entry { op, is_call, next, .. } = self.entries[e];
            if is_call {
                let why = match self.steps[op].apply(state) {
                    None => self.steps[op].contradiction(state, &self.values),
                    Some(_) => "it fits here, but no order of the rest fits after it".to_owned(),
                };
                candidates.push((self.ops[op].clone(), why));
            }
            e = next;
        }
        let overdue_op = self.entries[overdue].op;
        let named = match self.steps[overdue_op] {
            Step::Read(Some(value)) | Step::Cas { expected: value, outcome: Outcome::Ok, .. } => Some(value),
            _ => None,
        };
        let writers = (0..self.ops.len())
            .filter(|op| {
                let written = match self.steps[*op] {
                    Step::Write(value) | Step::Cas { value, .. } | Step::Create { value, .. } => Some(value),
                    _ => None,
                };
                named.is_some() && written == named
            })
            .map(|op| self.ops[op].clone())
            .collect();
        Box::new(Violation {
            writers,
            key: self.ops[self.entries[overdue].op].key.clone(),
            linearized_count: stack.len(),
            linearized_tail,
            state: state.map(|v| self.values[v as usize].clone()),
            overdue: self.ops[self.entries[overdue].op].clone(),
            candidates,
        })
    }
}

/// A compact summary of a history for test logs: operations, outcomes
/// unknown, keys.
pub fn summary(history: &[Operation]) -> String {
    let unknown = history.iter().filter(|op| op.output == Output::Unknown).count();
    let keys: HashSet<&str> = history.iter().map(|op| op.key.as_str()).collect();
    let mut text = String::new();
    let _ = write!(text, "{} operations on {} keys, {unknown} with unknown outcome", history.len(), keys.len());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds histories by hand: times in milliseconds.
    #[derive(Default)]
    struct H(Vec<Operation>);

    impl H {
        fn op(mut self, client: usize, key: &str, input: Input, output: Output, from: u64, to: u64) -> Self {
            self.0.push(Operation {
                client,
                key: key.to_owned(),
                input,
                output,
                invoked: Duration::from_millis(from),
                returned: Duration::from_millis(to),
            });
            self
        }
        fn write(self, client: usize, value: &str, from: u64, to: u64) -> Self {
            self.op(client, "k", Input::Write { value: value.into() }, Output::Ok, from, to)
        }
        fn read(self, client: usize, seen: Option<&str>, from: u64, to: u64) -> Self {
            self.op(client, "k", Input::Read, Output::Read(seen.map(Into::into)), from, to)
        }
        fn cas(self, client: usize, expected: &str, value: &str, output: Output, from: u64, to: u64) -> Self {
            let input = Input::CompareAndSwap { expected: expected.into(), value: value.into() };
            self.op(client, "k", input, output, from, to)
        }
        fn verdict(&self) -> Verdict {
            check(&self.0).unwrap()
        }
    }

    fn violation(verdict: Verdict) -> Violation {
        match verdict {
            Verdict::NotLinearizable(v) => *v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = H::default()
            .read(1, None, 0, 1)
            .write(1, "a", 2, 3)
            .read(2, Some("a"), 4, 5)
            .cas(2, "a", "b", Output::Ok, 6, 7)
            .cas(1, "a", "c", Output::Refused, 8, 9)
            .read(1, Some("b"), 10, 11)
            .op(1, "k", Input::Delete, Output::Ok, 12, 13)
            .op(2, "k", Input::Delete, Output::Refused, 14, 15)
            .op(1, "k", Input::Create { value: "d".into() }, Output::Ok, 16, 17)
            .op(2, "k", Input::Create { value: "e".into() }, Output::Refused, 18, 19)
            .read(2, Some("d"), 20, 21);
        assert_eq!(h.verdict(), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_returned_write_is_caught() {
        let h = H::default().write(1, "a", 0, 10).write(1, "b", 20, 30).read(2, Some("a"), 40, 50);
        let v = violation(h.verdict());
        assert_eq!(v.key, "k");
        assert_eq!(v.overdue.output, Output::Read(Some("a".into())));
        assert_eq!(v.state.as_deref(), Some("b"));
        let text = v.to_string();
        assert!(text.contains("read = \"a\"") && text.contains("holding \"b\""), "{text}");
        assert!(text.contains("written by: client 1 [0.000s..0.010s] write \"a\" ok"), "{text}");
    }

    #[test]
    fn lost_write_is_caught() {
        let h = H::default().write(1, "a", 0, 10).read(2, None, 20, 30);
        let v = violation(h.verdict());
        assert_eq!(v.overdue.output, Output::Read(None));
    }

    #[test]
    fn two_successful_cas_from_the_same_value_are_caught() {
        let h =
            H::default().write(1, "a", 0, 10).cas(1, "a", "b", Output::Ok, 20, 40).cas(2, "a", "c", Output::Ok, 25, 35);
        violation(h.verdict());
        // With a write of "a" between them, both may succeed.
        let h = H::default()
            .write(1, "a", 0, 10)
            .cas(1, "a", "b", Output::Ok, 20, 40)
            .cas(2, "a", "c", Output::Ok, 25, 35)
            .write(3, "a", 22, 38);
        assert_eq!(h.verdict(), Verdict::Linearizable);
    }

    #[test]
    fn two_creates_cannot_both_succeed() {
        let create = |v: &str| Input::Create { value: v.into() };
        let h = H::default().op(1, "k", create("a"), Output::Ok, 0, 10).op(2, "k", create("b"), Output::Ok, 5, 15);
        violation(h.verdict());
        let h = H::default().op(1, "k", create("a"), Output::Ok, 0, 10).op(2, "k", create("b"), Output::Refused, 5, 15);
        assert_eq!(h.verdict(), Verdict::Linearizable);
    }

    #[test]
    fn unknown_write_may_or_may_not_have_happened() {
        let unknown = |h: H| h.op(1, "k", Input::Write { value: "a".into() }, Output::Unknown, 0, 0);
        assert_eq!(unknown(H::default()).read(2, Some("a"), 100, 110).verdict(), Verdict::Linearizable);
        assert_eq!(unknown(H::default()).read(2, None, 100, 110).verdict(), Verdict::Linearizable);
        // Once seen, it cannot be undone.
        violation(unknown(H::default()).read(2, Some("a"), 100, 110).read(2, None, 120, 130).verdict());
        // It may take effect late, after a later write.
        let h = unknown(H::default()).write(2, "b", 50, 60).read(2, Some("b"), 70, 80).read(2, Some("a"), 90, 95);
        assert_eq!(h.verdict(), Verdict::Linearizable);
        // But never before its invocation.
        let h = H::default().read(2, Some("a"), 0, 10).op(
            1,
            "k",
            Input::Write { value: "a".into() },
            Output::Unknown,
            20,
            0,
        );
        violation(h.verdict());
    }

    #[test]
    fn unknown_cas_swaps_only_when_the_value_matches() {
        let h = H::default().write(1, "a", 0, 10).cas(1, "x", "b", Output::Unknown, 20, 0).read(2, Some("b"), 30, 40);
        violation(h.verdict());
        let h = H::default().write(1, "a", 0, 10).cas(1, "a", "b", Output::Unknown, 20, 0).read(2, Some("b"), 30, 40);
        assert_eq!(h.verdict(), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // A read overlapping a write may see it or not.
        assert_eq!(H::default().write(1, "a", 0, 100).read(2, Some("a"), 10, 20).verdict(), Verdict::Linearizable);
        assert_eq!(H::default().write(1, "a", 0, 100).read(2, None, 10, 20).verdict(), Verdict::Linearizable);
        // Two overlapping writes: either may win, listed in either order.
        for winner in ["a", "b"] {
            let h = H::default().write(1, "a", 0, 100).write(2, "b", 10, 90).read(3, Some(winner), 200, 210);
            assert_eq!(h.verdict(), Verdict::Linearizable, "winner {winner}");
            let h = H::default().write(2, "b", 10, 90).write(1, "a", 0, 100).read(3, Some(winner), 200, 210);
            assert_eq!(h.verdict(), Verdict::Linearizable, "winner {winner}, listed the other way");
        }
        // But two readers cannot see them in opposite orders after both returned.
        let h = H::default().write(1, "a", 0, 100).write(2, "b", 10, 90).read(3, Some("a"), 200, 210).read(
            3,
            Some("b"),
            220,
            230,
        );
        violation(h.verdict());
        // Operations touching at one instant count as concurrent.
        assert_eq!(H::default().write(1, "a", 0, 10).read(2, None, 10, 20).verdict(), Verdict::Linearizable);
    }

    #[test]
    fn keys_are_independent() {
        let h = H::default()
            .op(1, "x", Input::Write { value: "1".into() }, Output::Ok, 0, 10)
            .op(2, "y", Input::Read, Output::Read(None), 20, 30)
            .op(2, "x", Input::Read, Output::Read(Some("1".into())), 20, 30);
        assert_eq!(h.verdict(), Verdict::Linearizable);
        let h = H::default().op(1, "x", Input::Write { value: "1".into() }, Output::Ok, 0, 10).op(
            2,
            "y",
            Input::Read,
            Output::Read(Some("1".into())),
            20,
            30,
        );
        assert_eq!(violation(h.verdict()).key, "y");
    }

    #[test]
    fn unknown_reads_are_ignored() {
        let h = H::default().write(1, "a", 0, 10).op(2, "k", Input::Read, Output::Unknown, 20, 0);
        assert_eq!(h.verdict(), Verdict::Linearizable);
    }

    #[test]
    fn the_step_limit_gives_unknown() {
        // Many concurrent writes and a read no order explains: the search
        // has to try a lot before it can say no.
        let mut h = H::default();
        for i in 0..12 {
            h = h.write(i, &format!("v{i}"), 0, 100);
        }
        h = h.read(99, Some("never written"), 200, 210);
        assert!(
            matches!(Checker::default().step_limit(50).check(&h.0).unwrap(), Verdict::Unknown { ref key, .. } if key == "k")
        );
        violation(h.verdict());
    }

    #[test]
    fn many_unknown_writes_are_checked_quickly() {
        let mut h = H::default();
        for i in 0..30u64 {
            h = h.op(i as usize, "k", Input::Write { value: format!("u{i}") }, Output::Unknown, i * 10, 0);
            h = h.write(100, &format!("w{i}"), i * 10 + 1, i * 10 + 5).read(
                101,
                Some(&format!("w{i}")),
                i * 10 + 6,
                i * 10 + 8,
            );
        }
        h = h.read(102, Some("u3"), 400, 410);
        assert_eq!(h.verdict(), Verdict::Linearizable);
    }

    #[test]
    fn malformed_histories_are_refused() {
        let h = H::default().op(1, "k", Input::Read, Output::Ok, 0, 1);
        assert!(matches!(check(&h.0), Err(HistoryError::OutputMismatch { .. })));
        let h = H::default().op(1, "k", Input::Write { value: "a".into() }, Output::Refused, 0, 1);
        assert!(matches!(check(&h.0), Err(HistoryError::OutputMismatch { .. })));
        let h = H::default().write(1, "a", 10, 5);
        assert!(matches!(check(&h.0), Err(HistoryError::ReturnedBeforeInvoked { .. })));
    }

    #[test]
    fn the_recorder_keeps_times_in_order() {
        let recorder = Recorder::new();
        let first = recorder.invoke(1, "k", Input::Write { value: "a".into() });
        recorder.complete(first, Output::Ok);
        let second = recorder.invoke(2, "k", Input::Read);
        recorder.complete(second, Output::Read(Some("a".into())));
        let history = recorder.history();
        assert_eq!(history.len(), 2);
        assert!(history[0].invoked <= history[0].returned && history[0].returned <= history[1].invoked);
        assert_eq!(check(&history).unwrap(), Verdict::Linearizable);
        assert_eq!(summary(&history), "2 operations on 1 keys, 0 with unknown outcome");
    }
}
