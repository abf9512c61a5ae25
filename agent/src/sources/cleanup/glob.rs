//! A small glob matcher for cleanup patterns: `*`, `?`, `[..]`, `**` and
//! `\` escapes. Hand-written rather than `globset` (pulls in `regex`,
//! hundreds of KB on the gateway) for the four operators we need.
//!
//! Semantics (documented for installers in `cleanup/mod.rs`):
//! - A pattern without `/` matches the file name in any folder
//!   (`*.mp4` matches `2024/01/a.mp4`), like `.gitignore`.
//! - A pattern with `/` matches the whole path relative to the root.
//!   `*`, `?` and `[..]` never match `/`; `**` as a whole component
//!   matches zero or more folders (`**/*.bak`, `cam1/**`).
//! - `?` and `[..]` match one character; `[!a-z]` or `[^a-z]` negate.
//! - No special case for names starting with `.`.
//!
//! Pure and bounded: patterns are at most [`MAX_PATTERN_LEN`] bytes, and
//! matching is polynomial (no exponential backtracking): one pass over the
//! path per star in a component, a table over components for `**`.

use std::fmt;

/// Longest accepted pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 256;

/// One token of a path component pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    Class {
        neg: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One `/`-separated component of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Globstar,
    Pat(Vec<Tok>),
}

/// A compiled pattern. `Display` gives the text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segs: Vec<Seg>,
    /// No `/` in the pattern: match the file name only.
    name_only: bool,
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Glob {
    /// Compiles `text`; `Err` says what is wrong in plain words.
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("is longer than {MAX_PATTERN_LEN} bytes"));
        }
        if text.contains('\0') {
            return Err("contains a NUL byte".into());
        }
        if text.starts_with('/') {
            return Err("must be relative to the root (no leading `/`)".into());
        }
        let mut segs = Vec::new();
        for part in text.split('/') {
            match part {
                "" => return Err("has an empty path component (`//` or a trailing `/`)".into()),
                "." | ".." => return Err("must not contain `.` or `..` components".into()),
                "**" => segs.push(Seg::Globstar),
                p => segs.push(Seg::Pat(compile_seg(p)?)),
            }
        }
        Ok(Glob {
            text: text.to_owned(),
            name_only: !text.contains('/'),
            segs,
        })
    }

    /// Whether the root-relative path `rel` (components separated by `/`,
    /// no leading `/`) matches.
    pub fn matches(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        if self.name_only {
            let name = parts.last().copied().unwrap_or("");
            return match_segs(&self.segs, &[name]);
        }
        match_segs(&self.segs, &parts)
    }
}

fn compile_seg(p: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut it = p.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(e) => toks.push(Tok::Lit(e)),
                None => return Err("ends with a lone `\\`".into()),
            },
            '?' => toks.push(Tok::Any),
            '*' => {
                if it.peek() == Some(&'*') {
                    return Err(
                        "uses `**` inside a name; `**` must be a whole path component (`**/x`)"
                            .into(),
                    );
                }
                // Consecutive stars were rejected above, so one Star per run.
                toks.push(Tok::Star);
            }
            '[' => {
                let mut neg = false;
                if matches!(it.peek(), Some('!') | Some('^')) {
                    neg = true;
                    it.next();
                }
                let mut ranges = Vec::new();
                let mut first = true;
                let mut closed = false;
                while let Some(c) = it.next() {
                    // `]` first in the class is a literal (POSIX).
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        it.next().ok_or("ends inside `[...]`")?
                    } else {
                        c
                    };
                    let mut hi = lo;
                    if it.peek() == Some(&'-') {
                        let mut look = it.clone();
                        look.next();
                        match look.peek() {
                            Some(&']') | None => {}
                            Some(_) => {
                                it.next();
                                let h = it.next().ok_or("ends inside `[...]`")?;
                                hi = if h == '\\' {
                                    it.next().ok_or("ends inside `[...]`")?
                                } else {
                                    h
                                };
                                if hi < lo {
                                    return Err(format!("has a reversed range `{lo}-{hi}`"));
                                }
                            }
                        }
                    }
                    ranges.push((lo, hi));
                }
                if !closed {
                    return Err("has a `[` without its closing `]`".into());
                }
                toks.push(Tok::Class { neg, ranges });
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

fn tok_matches(t: &Tok, c: char) -> bool {
    match t {
        Tok::Lit(l) => *l == c,
        Tok::Any => true,
        Tok::Star => false,
        Tok::Class { neg, ranges } => {
            ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *neg
        }
    }
}

/// One component against one name: the classic greedy algorithm that
/// backtracks only to the last star, O(len(name) * len(pattern)).
fn match_seg(toks: &[Tok], name: &str) -> bool {
    let s: Vec<char> = name.chars().collect();
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match toks.get(p) {
            Some(Tok::Star) => {
                star = Some((p, i));
                p += 1;
            }
            Some(t) if tok_matches(t, s[i]) => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    toks[p.min(toks.len())..].iter().all(|t| *t == Tok::Star)
}

/// Components against components; `**` matches zero or more of them.
/// A table of (pattern position, path position), filled from the end.
fn match_segs(segs: &[Seg], parts: &[&str]) -> bool {
    let (np, ns) = (segs.len(), parts.len());
    let w = ns + 1;
    let mut dp = vec![false; (np + 1) * w];
    dp[np * w + ns] = true;
    for i in (0..np).rev() {
        for j in (0..=ns).rev() {
            dp[i * w + j] = match &segs[i] {
                Seg::Globstar => dp[(i + 1) * w + j] || (j < ns && dp[i * w + j + 1]),
                Seg::Pat(t) => j < ns && dp[(i + 1) * w + j + 1] && match_seg(t, parts[j]),
            };
        }
    }
    dp[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Glob::new(p).expect("valid pattern").matches(path)
    }

    #[test]
    fn name_patterns_match_in_any_folder() {
        assert!(m("*.mp4", "a.mp4"));
        assert!(m("*.mp4", "2024/01/02/cam1.mp4"));
        assert!(!m("*.mp4", "2024/a.mp4.part"));
        assert!(!m("*.mp4", "x.mp4/readme"));
        assert!(m("ch?_*.dav", "nvr/ch1_0800.dav"));
        assert!(!m("ch?_*.dav", "nvr/ch10_0800.dav"));
        assert!(m("*", ".hidden"));
    }

    #[test]
    fn path_patterns_and_globstar() {
        assert!(m("**/*.bak", "x.bak"));
        assert!(m("**/*.bak", "a/b/c/x.bak"));
        assert!(m("cam1/**", "cam1/2024/x.mp4"));
        assert!(!m("cam1/**", "cam2/2024/x.mp4"));
        assert!(m("cam1/*/x.mp4", "cam1/2024/x.mp4"));
        assert!(!m("cam1/*/x.mp4", "cam1/2024/01/x.mp4"));
        assert!(m("a/**/b/*.mp4", "a/b/1.mp4"));
        assert!(m("a/**/b/*.mp4", "a/x/y/b/1.mp4"));
        assert!(!m("a/**/b/*.mp4", "a/x/y/c/1.mp4"));
        assert!(m("**", "anything/at/all"));
        // `*` never crosses `/`.
        assert!(!m("a*/x", "ab/c/x"));
    }

    #[test]
    fn classes_escapes_and_unicode() {
        assert!(m("[ab]*.mp4", "b1.mp4"));
        assert!(!m("[!ab]*.mp4", "b1.mp4"));
        assert!(m("[^ab]*.mp4", "c1.mp4"));
        assert!(m("[0-9][0-9].dav", "42.dav"));
        assert!(!m("[0-9][0-9].dav", "4x.dav"));
        assert!(m("[]]x", "]x"));
        assert!(m("[a-]", "-"));
        assert!(m("\\*.mp4", "*.mp4"));
        assert!(!m("\\*.mp4", "a.mp4"));
        assert!(m("kamera-?.mp4", "kamera-é.mp4"));
        assert!(m("*é*", "caméra"));
    }

    #[test]
    fn stars_do_not_blow_up() {
        let p = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let name = "a".repeat(200);
        assert!(!m(p, &name));
        let deep = vec!["x"; 2000].join("/");
        assert!(!m("**/**/**/**/**/y", &deep));
        assert!(m("**/**/**/x", &deep));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for (p, needle) in [
            ("", "empty"),
            ("/abs/*.mp4", "relative"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("../x", "`..`"),
            ("a**", "whole path component"),
            ("[abc", "closing"),
            ("[z-a]", "reversed"),
            ("x\\", "lone"),
        ] {
            let e = Glob::new(p).expect_err(p);
            assert!(e.contains(needle), "{p}: {e}");
        }
        assert!(Glob::new(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
        assert_eq!(Glob::new("*.mp4").expect("ok").to_string(), "*.mp4");
    }
}
