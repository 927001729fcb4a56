//! A client for QEMU's machine protocol (QMP): one JSON object per line
//! each way, over the unix socket `-qmp` names. Used to read a stuck
//! guest's vCPUs (their registers and local APICs) through the human
//! monitor's `info` commands, which QMP runs and returns as text without
//! the line editor's echo that the plain monitor adds.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// How long one answer may take. QEMU's main loop answers while the
/// vCPUs run, so a slow answer means QEMU itself is stuck.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A QMP session with its capabilities negotiated.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects, reads QEMU's greeting and leaves negotiation mode.
    pub fn connect(socket: &Path) -> io::Result<Qmp> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(invalid(format!("expected QMP's greeting, got {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs a human monitor command (`info registers -a`, say) and returns
    /// its output.
    pub fn human(&mut self, command_line: &str) -> io::Result<String> {
        match self.execute("human-monitor-command", Some(json!({ "command-line": command_line })))? {
            Value::String(text) => Ok(text),
            other => Err(invalid(format!("`{command_line}` returned {other}, not text"))),
        }
    }

    /// Sends one command and returns its `return` value. Events that
    /// arrive before the answer are skipped.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> io::Result<Value> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        writeln!(self.writer, "{request}")?;
        loop {
            let mut message = self.read_message()?;
            if let Some(value) = message.get_mut("return") {
                return Ok(value.take());
            }
            if let Some(error) = message.get("error") {
                let class = error["class"].as_str().unwrap_or("error");
                let desc = error["desc"].as_str().unwrap_or("no description");
                return Err(io::Error::other(format!("QMP {command}: {class}: {desc}")));
            }
        }
    }

    fn read_message(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QEMU closed its QMP socket"));
        }
        serde_json::from_str(&line).map_err(|e| invalid(format!("not a QMP message ({e}): {}", line.trim_end())))
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The state of a guest's `cpus` vCPUs as QEMU's monitor shows it: which
/// vCPU is halted (`info cpus`), every vCPU's registers, and each local
/// APIC, whose timer and interrupt request register tell a vCPU that was
/// never woken from a timer that was never armed. `info lapic` takes an
/// APIC ID, which QEMU numbers like the vCPUs in a `-smp N` machine.
pub fn vcpu_state(socket: &Path, cpus: u32) -> io::Result<String> {
    let mut qmp = Qmp::connect(socket)?;
    let mut commands = vec!["info cpus".to_owned(), "info registers -a".to_owned()];
    commands.extend((0..cpus).map(|apic| format!("info lapic {apic}")));
    let mut text = String::new();
    for command in commands {
        text.push_str(&format!("# {command}\n{}\n", qmp.human(&command)?));
    }
    Ok(text)
}
