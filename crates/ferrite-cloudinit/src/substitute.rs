//! `$private_ipv4`-style substitution and the `/etc/environment` merge, as
//! coreos-cloudinit does them. Pure: no I/O.

use std::net::IpAddr;

/// The addresses a datasource's metadata (or the environment) supplies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// `$public_ipv4`.
    pub public_ipv4: Option<IpAddr>,
    /// `$private_ipv4`.
    pub private_ipv4: Option<IpAddr>,
    /// `$public_ipv6`.
    pub public_ipv6: Option<IpAddr>,
    /// `$private_ipv6`.
    pub private_ipv6: Option<IpAddr>,
}

impl Addresses {
    /// Each variable with its value, or the `COREOS_*` variable from `env`
    /// where metadata has none (coreos-cloudinit's fallback).
    pub fn substitutions(&self, env: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
        let pick = |ip: Option<IpAddr>, var: &str| ip.map(|ip| ip.to_string()).or_else(|| env(var)).unwrap_or_default();
        vec![
            ("public_ipv4", pick(self.public_ipv4, "COREOS_PUBLIC_IPV4")),
            ("private_ipv4", pick(self.private_ipv4, "COREOS_PRIVATE_IPV4")),
            ("public_ipv6", pick(self.public_ipv6, "COREOS_PUBLIC_IPV6")),
            ("private_ipv6", pick(self.private_ipv6, "COREOS_PRIVATE_IPV6")),
        ]
    }

    /// The `/etc/environment` variables: `COREOS_*` for each known address.
    pub fn environment(&self) -> Vec<(String, String)> {
        [
            ("COREOS_PUBLIC_IPV4", self.public_ipv4),
            ("COREOS_PRIVATE_IPV4", self.private_ipv4),
            ("COREOS_PUBLIC_IPV6", self.public_ipv6),
            ("COREOS_PRIVATE_IPV6", self.private_ipv6),
        ]
        .into_iter()
        .filter_map(|(k, ip)| ip.map(|ip| (k.to_owned(), ip.to_string())))
        .collect()
    }
}

/// Replaces `$name` by its value for each `(name, value)`, and `\$name` by a
/// literal `$name`. Other `$` and `\` are left alone.
pub fn substitute(text: &str, substitutions: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(i) = rest.find(['$', '\\']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (escaped, after) = match (rest.strip_prefix("\\$"), rest.strip_prefix('$')) {
            (Some(after), _) => (true, Some(after)),
            (None, Some(after)) => (false, Some(after)),
            (None, None) => (false, None),
        };
        if let Some(after) = after {
            for (name, value) in substitutions {
                if let Some(tail) = after.strip_prefix(name) {
                    if escaped {
                        out.push('$');
                        out.push_str(name);
                    } else {
                        out.push_str(value);
                    }
                    rest = tail;
                    continue 'scan;
                }
            }
        }
        // Not a known variable: keep the character and move on.
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Merges `vars` into an environment file: a line setting a variable in
/// `vars` gets the new value, every other line is kept as it was, and the
/// variables not yet present are appended in name order.
pub fn merge_environment(old: &str, vars: &[(String, String)]) -> String {
    let mut pending: Vec<&(String, String)> = vars.iter().collect();
    let mut out = String::new();
    for line in old.lines() {
        let key = line
            .split_once('=')
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        match key.and_then(|k| pending.iter().position(|(name, _)| name == k)) {
            Some(i) => {
                let (name, value) = pending.remove(i);
                out.push_str(&format!("{name}={value}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in pending {
        out.push_str(&format!("{name}={value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Vec<(&'static str, String)> {
        Addresses {
            public_ipv4: Some("203.0.113.5".parse().unwrap()),
            private_ipv4: Some("10.0.0.5".parse().unwrap()),
            public_ipv6: None,
            private_ipv6: Some("fd00::5".parse().unwrap()),
        }
        .substitutions(|_| None)
    }

    #[test]
    fn variables_are_replaced_and_escapes_kept_literal() {
        assert_eq!(substitute("addr: $private_ipv4:4001", &subs()), "addr: 10.0.0.5:4001");
        assert_eq!(substitute("$public_ipv4 $private_ipv6", &subs()), "203.0.113.5 fd00::5");
        assert_eq!(substitute(r"echo \$private_ipv4", &subs()), "echo $private_ipv4");
        assert_eq!(substitute("$public_ipv6|", &subs()), "|");
        assert_eq!(substitute(r"cost $5 \n $HOME", &subs()), r"cost $5 \n $HOME");
    }

    #[test]
    fn environment_falls_back_to_coreos_variables() {
        let subs = Addresses::default().substitutions(|k| (k == "COREOS_PRIVATE_IPV4").then(|| "192.0.2.9".to_owned()));
        assert_eq!(substitute("$private_ipv4", &subs), "192.0.2.9");
    }

    #[test]
    fn environment_merge_keeps_other_lines() {
        let vars = vec![
            ("COREOS_PUBLIC_IPV4".to_owned(), "1.2.3.4".to_owned()),
            ("COREOS_PRIVATE_IPV4".to_owned(), "10.0.0.1".to_owned()),
        ];
        let old = "# comment\nPATH=/usr/bin\nCOREOS_PRIVATE_IPV4=10.9.9.9\nFOO=bar";
        assert_eq!(
            merge_environment(old, &vars),
            "# comment\nPATH=/usr/bin\nCOREOS_PRIVATE_IPV4=10.0.0.1\nFOO=bar\nCOREOS_PUBLIC_IPV4=1.2.3.4\n"
        );
        let once = merge_environment("", &vars);
        assert_eq!(merge_environment(&once, &vars), once);
    }
}
