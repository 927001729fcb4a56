//! systemd unit files as fleet reads, stores and hashes them.
//!
//! The lexer follows go-systemd's `unit.Deserialize`, which fleet uses, so a
//! file fleet accepts is accepted here with the same options and values, and
//! a file it refuses is refused with the same message (plus the line, which
//! go-systemd does not give). Serialising groups options by section in the
//! order first seen, and the SHA-1 of that text is the unit's hash, the name
//! under which its contents are stored in the registry.

use std::collections::BTreeMap;
use std::fmt;

use sha1::{Digest, Sha1};

/// systemd's LINE_MAX on Linux; go-systemd refuses longer lines.
const LINE_MAX: usize = 2048;

/// One `Name=value` of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitOption {
    pub section: String,
    pub name: String,
    pub value: String,
}

/// Why a unit file cannot be read; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitFileError {
    #[error("line {line}: line too long (max {LINE_MAX} bytes)")]
    LineTooLong { line: usize },
    #[error("line {line}: unable to find end of section")]
    UnterminatedSection { line: usize },
    #[error("line {line}: found garbage after section name {section}: {garbage:?}")]
    GarbageAfterSection { line: usize, section: String, garbage: String },
    #[error("line {line}: unexpected newline encountered while parsing option name")]
    NewlineInOptionName { line: usize },
    #[error("line {line}: unexpected end of file while parsing option name")]
    EofInOptionName { line: usize },
}

/// A parsed unit file. Like systemd's, it has no name of its own: it is
/// named by the unit that refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    options: Vec<UnitOption>,
}

/// The SHA-1 of a unit file's serialised form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitHash(pub [u8; 20]);

impl UnitHash {
    /// Parses 40 hex digits.
    pub fn from_hex(hex: &str) -> Option<UnitHash> {
        if hex.len() != 40 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(UnitHash(out))
    }

    /// The first 7 hex digits, as fleetctl shows hashes.
    pub fn short(&self) -> String {
        self.to_string()[..7].to_owned()
    }
}

impl fmt::Display for UnitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for UnitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnitHash({self})")
    }
}

impl UnitFile {
    /// Parses a unit file's text.
    pub fn parse(raw: &str) -> Result<UnitFile, UnitFileError> {
        Lexer::new(raw).run().map(|options| UnitFile { options })
    }

    pub fn from_options(options: Vec<UnitOption>) -> UnitFile {
        UnitFile { options }
    }

    pub fn options(&self) -> &[UnitOption] {
        &self.options
    }

    /// Every value of `name` in `section`, in file order. Options of the
    /// `[X-Fleet]` section may hold several quoted values on one line
    /// (`MachineMetadata="a=1" "b=2"`), which come back one by one.
    pub fn values(&self, section: &str, name: &str) -> Vec<String> {
        self.options
            .iter()
            .filter(|o| o.section == section && o.name == name)
            .flat_map(|o| if section == "X-Fleet" { split_multivalue(&o.value) } else { vec![o.value.clone()] })
            .collect()
    }

    /// The options of `section` by name, each with all its values, as
    /// fleet's `UnitFile.Contents` holds them.
    pub fn section(&self, section: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for option in self.options.iter().filter(|o| o.section == section) {
            out.entry(option.name.clone()).or_default();
        }
        for (name, values) in &mut out {
            *values = self.values(section, name);
        }
        out
    }

    /// The first `Description=` of `[Unit]`.
    pub fn description(&self) -> Option<&str> {
        self.options.iter().find(|o| o.section == "Unit" && o.name == "Description").map(|o| o.value.as_str())
    }

    /// The file as fleet writes it: options grouped by section in the order
    /// sections first appear, a blank line between sections.
    pub fn serialize(&self) -> String {
        let mut sections: Vec<&str> = Vec::new();
        for option in &self.options {
            if !sections.contains(&option.section.as_str()) {
                sections.push(&option.section);
            }
        }
        let mut out = String::new();
        for (i, section) in sections.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push('[');
            out.push_str(section);
            out.push_str("]\n");
            for option in self.options.iter().filter(|o| o.section == *section) {
                out.push_str(&option.name);
                out.push('=');
                out.push_str(&option.value);
                out.push('\n');
            }
        }
        out
    }

    /// SHA-1 of [`UnitFile::serialize`].
    pub fn hash(&self) -> UnitHash {
        UnitHash(Sha1::digest(self.serialize().as_bytes()).into())
    }
}

/// fleet's `parseMultivalueLine`: a value that starts and ends with a quote
/// is split at spaces outside quotes, and the quotes are dropped.
fn split_multivalue(line: &str) -> Vec<String> {
    if !(line.starts_with('"') && line.ends_with('"')) {
        return vec![line.to_owned()];
    }
    let mut values = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => values.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    values.push(current);
    values
}

/// go-systemd's lexer, one state per function there, over a byte cursor
/// that counts lines.
struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    options: Vec<UnitOption>,
}

enum Step {
    NextSection,
    SectionName,
    NextSectionOrOption(String),
    OptionName(String),
    Done,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Lexer<'a> {
        Lexer { text, pos: 0, line: 1, options: Vec::new() }
    }

    fn run(mut self) -> Result<Vec<UnitOption>, UnitFileError> {
        let mut step = Step::NextSection;
        loop {
            self.check_line_length()?;
            step = match step {
                Step::Done => return Ok(self.options),
                Step::NextSection => self.next_section(),
                Step::SectionName => self.section_name()?,
                Step::NextSectionOrOption(section) => self.next_section_or_option(section),
                Step::OptionName(section) => self.option(section)?,
            };
        }
    }

    /// go-systemd refuses to go on when the next LINE_MAX bytes hold no
    /// line break (systemd would silently truncate the line).
    fn check_line_length(&self) -> Result<(), UnitFileError> {
        let rest = &self.text.as_bytes()[self.pos..];
        if rest.len() >= LINE_MAX && !rest[..LINE_MAX].iter().any(|b| matches!(b, b'\r' | b'\n')) {
            return Err(UnitFileError::LineTooLong { line: self.line });
        }
        Ok(())
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.text[self.pos..].chars().next()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Reads to the end of the line (or file); the line break is consumed
    /// and dropped, with a `\r` before it. Returns `(line, at end of file)`.
    fn read_line(&mut self) -> (&'a str, bool) {
        let rest = &self.text[self.pos..];
        let (line, eof) = match rest.find('\n') {
            Some(i) => {
                self.pos += i + 1;
                self.line += 1;
                (&rest[..i], false)
            }
            None => {
                self.pos = self.text.len();
                (rest, true)
            }
        };
        (line.strip_suffix('\r').unwrap_or(line), eof)
    }

    /// Skips a comment line and the lines it continues onto.
    fn ignore_line(&mut self) {
        loop {
            let (line, eof) = self.read_line();
            if eof || !line.strip_suffix(' ').unwrap_or(line).ends_with('\\') {
                return;
            }
        }
    }

    fn next_section(&mut self) -> Step {
        match self.next_char() {
            None => Step::Done,
            Some('[') => Step::SectionName,
            Some('#' | ';') => {
                self.ignore_line();
                Step::NextSection
            }
            Some(_) => Step::NextSection,
        }
    }

    fn section_name(&mut self) -> Result<Step, UnitFileError> {
        let start_line = self.line;
        let rest = &self.text[self.pos..];
        let end = rest.find(']').ok_or(UnitFileError::UnterminatedSection { line: start_line })?;
        let section = &rest[..end];
        for c in section.chars().chain(std::iter::once(']')) {
            if c == '\n' {
                self.line += 1;
            }
            self.pos += c.len_utf8();
        }
        let line = self.line;
        let (garbage, _) = self.read_line();
        let garbage = garbage.trim();
        if !garbage.is_empty() {
            // go-systemd names the previous section here (a quirk kept for
            // the message) but the garbage is what matters.
            return Err(UnitFileError::GarbageAfterSection {
                line,
                section: section.to_owned(),
                garbage: garbage.to_owned(),
            });
        }
        Ok(Step::NextSectionOrOption(section.to_owned()))
    }

    fn next_section_or_option(&mut self, section: String) -> Step {
        let before = (self.pos, self.line);
        match self.next_char() {
            None => Step::Done,
            Some(c) if c.is_whitespace() => Step::NextSectionOrOption(section),
            Some('[') => Step::SectionName,
            Some('#' | ';') => {
                self.ignore_line();
                Step::NextSectionOrOption(section)
            }
            Some(_) => {
                (self.pos, self.line) = before;
                Step::OptionName(section)
            }
        }
    }

    /// `Name=value`, the value running on over lines that end in `\`.
    fn option(&mut self, section: String) -> Result<Step, UnitFileError> {
        let mut name = String::new();
        loop {
            match self.next_char() {
                None => return Err(UnitFileError::EofInOptionName { line: self.line }),
                Some('\n' | '\r') => {
                    let line = if self.text.as_bytes()[self.pos - 1] == b'\n' { self.line - 1 } else { self.line };
                    return Err(UnitFileError::NewlineInOptionName { line });
                }
                Some('=') => break,
                Some(c) => name.push(c),
            }
        }
        let name = name.trim().to_owned();
        let mut value = String::new();
        loop {
            let (line, eof) = self.read_line();
            if line.trim().is_empty() {
                break;
            }
            value.push_str(line);
            // Only a backslash that ends the line continues the value; it is
            // kept, and the line break after it too (go-systemd's behaviour).
            if !line.ends_with('\\') {
                break;
            }
            if !eof {
                value.push('\n');
            }
        }
        let value = if value.ends_with('\n') { format!("{}\n", value.trim()) } else { value.trim().to_owned() };
        self.options.push(UnitOption { section: section.clone(), name, value });
        Ok(Step::NextSectionOrOption(section))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(raw: &str) -> Vec<(String, String, String)> {
        UnitFile::parse(raw).unwrap().options.into_iter().map(|o| (o.section, o.name, o.value)).collect()
    }

    fn o(section: &str, name: &str, value: &str) -> (String, String, String) {
        (section.to_owned(), name.to_owned(), value.to_owned())
    }

    #[test]
    fn sections_options_comments_and_blank_lines() {
        let raw = "# leading comment\n[Unit]\nDescription = Hello World \n; another\n\n[Service]\nExecStart=/bin/sh -c 'echo hi'\nExecStart=/bin/true\n";
        assert_eq!(
            opts(raw),
            vec![
                o("Unit", "Description", "Hello World"),
                o("Service", "ExecStart", "/bin/sh -c 'echo hi'"),
                o("Service", "ExecStart", "/bin/true"),
            ]
        );
    }

    #[test]
    fn crlf_line_ends_are_accepted() {
        assert_eq!(opts("[Unit]\r\nDescription=x\r\n"), vec![o("Unit", "Description", "x")]);
    }

    #[test]
    fn continuation_keeps_the_backslash_and_the_line_break() {
        assert_eq!(
            opts("[Service]\nExecStart=/bin/echo \\\n  hello\nUser=core\n"),
            vec![o("Service", "ExecStart", "/bin/echo \\\n  hello"), o("Service", "User", "core")]
        );
    }

    #[test]
    fn an_empty_value_is_kept() {
        assert_eq!(opts("[Service]\nEnvironment=\n"), vec![o("Service", "Environment", "")]);
    }

    #[test]
    fn text_before_the_first_section_is_skipped() {
        assert_eq!(opts("garbage here\n[X-Fleet]\nGlobal=true"), vec![o("X-Fleet", "Global", "true")]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = |raw: &str| UnitFile::parse(raw).unwrap_err();
        assert_eq!(err("[Unit]\nDescription=x\n[Service"), UnitFileError::UnterminatedSection { line: 3 });
        assert_eq!(
            err("[Unit]\n[Service] trailing\n"),
            UnitFileError::GarbageAfterSection { line: 2, section: "Service".into(), garbage: "trailing".into() }
        );
        assert_eq!(err("[Unit]\nDescription=x\nNoEquals\nMore=1\n"), UnitFileError::NewlineInOptionName { line: 3 });
        assert_eq!(err("[Unit]\nDescription"), UnitFileError::EofInOptionName { line: 2 });
        let long = format!("[Unit]\nDescription={}\n", "x".repeat(LINE_MAX));
        assert_eq!(err(&long), UnitFileError::LineTooLong { line: 2 });
        assert_eq!(
            err("[Unit]\n[Service] trailing\n").to_string(),
            "line 2: found garbage after section name Service: \"trailing\""
        );
    }

    #[test]
    fn serialisation_groups_sections_in_first_seen_order() {
        let unit = UnitFile::parse("[Unit]\nA=1\n[Service]\nB=2\n[Unit]\nC=3\n").unwrap();
        assert_eq!(unit.serialize(), "[Unit]\nA=1\nC=3\n\n[Service]\nB=2\n");
    }

    #[test]
    fn the_hash_is_sha1_of_the_serialised_file() {
        // sha1("[Unit]\nDescription=x\n")
        let unit = UnitFile::parse("[Unit]\n  Description = x\n").unwrap();
        let expected: [u8; 20] = Sha1::digest(b"[Unit]\nDescription=x\n").into();
        assert_eq!(unit.hash(), UnitHash(expected));
        assert_eq!(UnitHash::from_hex(&unit.hash().to_string()), Some(unit.hash()));
        assert_eq!(unit.hash().short().len(), 7);
        // Whitespace and comments do not change the hash; content does.
        assert_eq!(UnitFile::parse("# c\n[Unit]\nDescription=x").unwrap().hash(), unit.hash());
        assert_ne!(UnitFile::parse("[Unit]\nDescription=y").unwrap().hash(), unit.hash());
    }

    #[test]
    fn x_fleet_values_split_quoted_lists() {
        let unit = UnitFile::parse(
            "[X-Fleet]\nMachineMetadata=\"region=us\" \"disk=ssd\"\nMachineMetadata=region=eu\nConflicts=a*\n",
        )
        .unwrap();
        assert_eq!(unit.values("X-Fleet", "MachineMetadata"), vec!["region=us", "disk=ssd", "region=eu"]);
        let section = unit.section("X-Fleet");
        assert_eq!(section["Conflicts"], vec!["a*"]);
        assert_eq!(section.len(), 2);
    }

    #[test]
    fn other_sections_do_not_split_quotes() {
        let unit = UnitFile::parse("[Service]\nExecStart=\"a b\" \"c\"\n").unwrap();
        assert_eq!(unit.values("Service", "ExecStart"), vec!["\"a b\" \"c\""]);
    }
}
