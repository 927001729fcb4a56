//! Go's `path.Match`, which fleet uses for `Conflicts=` and `Replaces=`
//! patterns: `*` (any run of characters but `/`), `?`, `[a-z]`, `[^...]`
//! and `\` escapes. A malformed pattern matches nothing, as fleet ignores
//! `path.Match`'s error.

/// Whether `name` matches all of `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    match_from(&pattern, &name).unwrap_or(false)
}

/// `None` for a malformed pattern.
fn match_from(pattern: &[char], name: &[char]) -> Option<bool> {
    match pattern.first() {
        None => Some(name.is_empty()),
        Some('*') => {
            let rest = &pattern[1..];
            // The rest must be well formed even where it is never reached.
            let mut result = match_from(rest, name)?;
            for i in 0..name.len() {
                if result || name[i] == '/' {
                    break;
                }
                result = match_from(rest, &name[i + 1..])?;
            }
            Some(result)
        }
        Some('?') => match name.first() {
            Some(c) if *c != '/' => match_from(&pattern[1..], &name[1..]),
            _ => check_rest(&pattern[1..]),
        },
        Some('[') => {
            let (class_matches, len) = class(&pattern[1..], name.first().copied())?;
            if class_matches && name.first().is_some_and(|c| *c != '/') {
                match_from(&pattern[1 + len..], &name[1..])
            } else {
                check_rest(&pattern[1 + len..])
            }
        }
        Some('\\') => {
            let literal = *pattern.get(1)?;
            if name.first() == Some(&literal) {
                match_from(&pattern[2..], &name[1..])
            } else {
                check_rest(&pattern[2..])
            }
        }
        Some(c) => {
            if name.first() == Some(c) {
                match_from(&pattern[1..], &name[1..])
            } else {
                check_rest(&pattern[1..])
            }
        }
    }
}

/// No match; but as Go does, report a malformed remainder as an error.
fn check_rest(pattern: &[char]) -> Option<bool> {
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' => {
                pattern.get(i + 1)?;
                i += 2;
            }
            '[' => {
                let (_, len) = class(&pattern[i + 1..], None)?;
                i += 1 + len;
            }
            _ => i += 1,
        }
    }
    Some(false)
}

/// A character class after its `[`: whether `c` is in it, and how many
/// pattern characters it took (through the `]`).
fn class(pattern: &[char], c: Option<char>) -> Option<(bool, usize)> {
    let mut i = 0;
    let negated = pattern.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut ranges = 0;
    loop {
        let lo = *pattern.get(i)?;
        if lo == ']' && ranges > 0 {
            i += 1;
            break;
        }
        let (lo, next) = class_char(pattern, i)?;
        i = next;
        let mut hi = lo;
        if pattern.get(i) == Some(&'-') {
            let (h, next) = class_char(pattern, i + 1)?;
            hi = h;
            i = next;
        }
        if c.is_some_and(|c| lo <= c && c <= hi) {
            matched = true;
        }
        ranges += 1;
    }
    Some((matched != negated, i))
}

fn class_char(pattern: &[char], i: usize) -> Option<(char, usize)> {
    match *pattern.get(i)? {
        '-' | ']' => None,
        '\\' => Some((*pattern.get(i + 1)?, i + 2)),
        c => Some((c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn like_go_path_match() {
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abe", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a/b", false),
            ("conflict*", "conflict.0.service", true),
            ("conflict*", "hello.service", false),
            ("[", "a", false),
            ("[^", "a", false),
            ("a[", "a", false),
            ("*x", "xxx", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(matches(pattern, name), expected, "{pattern:?} vs {name:?}");
        }
    }
}
