//! Unit names: validation as fleet's API does it (after systemd's
//! `unit_name_is_valid`), and the parts of a template or instance name.

/// Why a unit name is refused; the messages are fleet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitNameError {
    #[error("unit name cannot be empty")]
    Empty,
    #[error("unit name exceeds maximum length ({UNIT_NAME_MAX})")]
    TooLong,
    #[error("unit name must contain \".\"")]
    NoDot,
    #[error("unit name cannot end in \".\"")]
    EndsInDot,
    #[error("invalid unit type: {0:?}")]
    Type(String),
    #[error("invalid unit type for template: {0:?}")]
    TemplateType(String),
    #[error("invalid character {0:?} in unit name")]
    Character(char),
    #[error("unit name cannot start in \"@\"")]
    StartsWithAt,
}

/// systemd's limit on a unit name's length.
pub const UNIT_NAME_MAX: usize = 256;

const UNIT_TYPES: &[&str] = &[
    "automount",
    "busname",
    "device",
    "mount",
    "path",
    "scope",
    "service",
    "slice",
    "snapshot",
    "socket",
    "swap",
    "target",
    "timer",
];

const TEMPLATE_TYPES: &[&str] = &["path", "service", "socket", "target", "timer"];

/// Checks a unit name, reporting the first problem as fleet does.
pub fn validate(name: &str) -> Result<(), UnitNameError> {
    if name.is_empty() {
        return Err(UnitNameError::Empty);
    }
    if name.len() > UNIT_NAME_MAX {
        return Err(UnitNameError::TooLong);
    }
    let dot = name.rfind('.').ok_or(UnitNameError::NoDot)?;
    if dot == name.len() - 1 {
        return Err(UnitNameError::EndsInDot);
    }
    let suffix = &name[dot + 1..];
    if !UNIT_TYPES.contains(&suffix) {
        return Err(UnitNameError::Type(suffix.to_owned()));
    }
    if name.contains('@') && !TEMPLATE_TYPES.contains(&suffix) {
        return Err(UnitNameError::TemplateType(suffix.to_owned()));
    }
    if let Some(c) = name[..dot].chars().find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c))) {
        return Err(UnitNameError::Character(c));
    }
    if name.starts_with('@') {
        return Err(UnitNameError::StartsWithAt);
    }
    Ok(())
}

/// Whether fleet runs units of this name's type (fleetctl refuses others).
pub fn recognized_type(name: &str) -> bool {
    ["service", "socket", "timer", "path", "device", "mount", "automount"]
        .iter()
        .any(|t| name.strip_suffix(t).is_some_and(|rest| rest.ends_with('.')))
}

/// What a unit's name says about it: `foo@bar.service` is instance `bar` of
/// template `foo@.service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameInfo {
    /// `foo@bar.service`
    pub full_name: String,
    /// `foo@bar`
    pub name: String,
    /// `foo`
    pub prefix: String,
    /// `foo@.service`, for templates and instances.
    pub template: Option<String>,
    /// `bar`; empty for a template.
    pub instance: String,
}

impl NameInfo {
    /// `None` when the name has no `.type` suffix.
    pub fn parse(full_name: &str) -> Option<NameInfo> {
        let dot = full_name.rfind('.')?;
        let (name, suffix) = full_name.split_at(dot);
        let (prefix, template, instance) = match name.split_once('@') {
            None => (name, None, ""),
            Some((prefix, instance)) => (prefix, Some(format!("{prefix}@{suffix}")), instance),
        };
        Some(NameInfo {
            full_name: full_name.to_owned(),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            template,
            instance: instance.to_owned(),
        })
    }

    pub fn is_instance(&self) -> bool {
        !self.instance.is_empty()
    }

    pub fn is_template(&self) -> bool {
        self.template.is_some() && !self.is_instance()
    }

    /// systemd's `unit_name_printf` for the specifiers fleet supports:
    /// `%n` full name, `%N` name without the type, `%p` prefix, `%i`
    /// instance. Replaced in that order, each everywhere, as fleet does.
    pub fn printf(&self, value: &str) -> String {
        value
            .replace("%n", &self.full_name)
            .replace("%N", &self.name)
            .replace("%p", &self.prefix)
            .replace("%i", &self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in ["hello.service", "foo@bar.service", "foo@.service", "a:b-c_d.e\\x.mount", "x.timer"] {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
        assert_eq!(validate(&format!("{}.service", "a".repeat(UNIT_NAME_MAX - 8))), Ok(()));
    }

    #[test]
    fn invalid_names_with_fleets_messages() {
        let cases = [
            ("", "unit name cannot be empty"),
            ("hello", "unit name must contain \".\""),
            ("hello.", "unit name cannot end in \".\""),
            ("hello.unknown", "invalid unit type: \"unknown\""),
            ("foo@bar.mount", "invalid unit type for template: \"mount\""),
            ("hel lo.service", "invalid character ' ' in unit name"),
            ("@foo.service", "unit name cannot start in \"@\""),
        ];
        for (name, message) in cases {
            assert_eq!(validate(name).unwrap_err().to_string(), message, "{name:?}");
        }
        let long = format!("{}.service", "a".repeat(UNIT_NAME_MAX));
        assert_eq!(validate(&long).unwrap_err().to_string(), "unit name exceeds maximum length (256)");
    }

    #[test]
    fn template_and_instance_parts() {
        let instance = NameInfo::parse("foo@bar.service").unwrap();
        assert_eq!(instance.name, "foo@bar");
        assert_eq!(instance.prefix, "foo");
        assert_eq!(instance.template.as_deref(), Some("foo@.service"));
        assert_eq!(instance.instance, "bar");
        assert!(instance.is_instance() && !instance.is_template());

        let template = NameInfo::parse("foo@.service").unwrap();
        assert!(template.is_template() && !template.is_instance());

        let plain = NameInfo::parse("hello.service").unwrap();
        assert_eq!((plain.prefix.as_str(), plain.template.as_deref()), ("hello", None));
        assert_eq!(NameInfo::parse("noext"), None);
    }

    #[test]
    fn specifiers() {
        let info = NameInfo::parse("web@2.service").unwrap();
        assert_eq!(info.printf("%n|%N|%p|%i|%%x"), "web@2.service|web@2|web|2|%%x");
        assert_eq!(info.printf("Conflicts=%p@*.service"), "Conflicts=web@*.service");
    }

    #[test]
    fn recognized_types() {
        assert!(recognized_type("a.service") && recognized_type("b.automount"));
        assert!(!recognized_type("c.target") && !recognized_type("service"));
    }
}
