//! Glob matching over characters: `*` matches any run (including none), `?` exactly one
//! character, everything else itself. Linear-time two-pointer algorithm with one backtrack point,
//! no allocation.

/// Whether `text` matches the glob `pattern` as a whole.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let t = text;
    let (mut pi, mut ti) = (0usize, 0usize);
    // (pattern index after the last `*`, text index it is matched up to)
    let mut star: Option<(usize, usize)> = None;
    loop {
        let tc = t.get(ti..).and_then(|r| r.chars().next());
        let pc = pattern.get(pi..).and_then(|r| r.chars().next());
        match (pc, tc) {
            (Some('*'), _) => {
                pi = pi.saturating_add(1);
                star = Some((pi, ti));
                continue;
            }
            (Some('?'), Some(c)) => {
                pi = pi.saturating_add(1);
                ti = ti.saturating_add(c.len_utf8());
                continue;
            }
            (Some(a), Some(c)) if a == c => {
                pi = pi.saturating_add(a.len_utf8());
                ti = ti.saturating_add(c.len_utf8());
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        // mismatch: let the last `*` swallow one more character
        match star {
            Some((sp, st)) => {
                let Some(c) = t.get(st..).and_then(|r| r.chars().next()) else {
                    return false;
                };
                let nt = st.saturating_add(c.len_utf8());
                star = Some((sp, nt));
                pi = sp;
                ti = nt;
            }
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("read_*", "read_file"));
        assert!(!glob_match("read_*", "write_file"));
        assert!(glob_match("*.corp.example", "a.b.corp.example"));
        assert!(!glob_match("*.corp.example", "corp.example"));
        assert!(glob_match("deps/?", "deps/x"));
        assert!(!glob_match("deps/?", "deps/xy"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("é?", "éü"));
        assert!(glob_match("?", "ü"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("**a", "ba"));
    }
}
