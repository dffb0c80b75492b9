//! Follows `include GLOB` lines as keepalived does: the pattern is relative to the
//! including file's directory, matches are read in sorted order, and every line keeps its
//! own file's name and number. Depth is bounded and a file including itself (directly or
//! not) is refused.

use std::path::{Component, Path, PathBuf};

use super::lexer::{self, Line, Word};
use crate::import::ParseError;

/// Deeper nesting than this is refused (keepalived configs rarely go past 2).
pub const MAX_DEPTH: usize = 8;

/// What the loader needs from a file system (a trait so the tests can use a map).
pub trait Files {
    fn read(&self, path: &Path) -> Result<String, String>;
    /// Names in a directory.
    fn list(&self, dir: &Path) -> Result<Vec<String>, String>;
    fn is_dir(&self, path: &Path) -> bool;
    fn exists(&self, path: &Path) -> bool;
    /// The path with symlinks and `..` resolved, for cycle detection.
    fn canonical(&self, path: &Path) -> PathBuf;
}

/// The real file system.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
    fn list(&self, dir: &Path) -> Result<Vec<String>, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
        Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// A line and the file it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub line: Line,
}

/// Reads `path` with its includes expanded in place.
pub fn load(path: &Path, files: &dyn Files) -> Result<Vec<Located>, ParseError> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    load_into(path, files, &mut stack, &mut out)?;
    Ok(out)
}

fn load_into(
    path: &Path,
    files: &dyn Files,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<Located>,
) -> Result<(), ParseError> {
    let name = path.display().to_string();
    let text = files
        .read(path)
        .map_err(|e| ParseError::new(&name, 0, format!("cannot read: {e}")))?;
    stack.push(files.canonical(path));
    for line in lexer::lex(&text, &name)? {
        let Some(pattern) = include_pattern(&line) else {
            out.push(Located {
                file: name.clone(),
                line,
            });
            continue;
        };
        let at = |m: String| ParseError::new(&name, line.line, m);
        let pattern = pattern.map_err(at)?;
        if stack.len() >= MAX_DEPTH {
            return Err(at(format!("includes nested deeper than {MAX_DEPTH}")));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let full = base.join(&pattern);
        let matches = expand(&full, files);
        if matches.is_empty() && !has_wildcard(&pattern) {
            return Err(at(format!("include {pattern}: no such file")));
        }
        for m in matches {
            if stack.contains(&files.canonical(&m)) {
                return Err(at(format!(
                    "include {pattern}: {} is already being read (an include cycle)",
                    m.display()
                )));
            }
            load_into(&m, files, stack, out)?;
        }
    }
    stack.pop();
    Ok(())
}

/// `Some` for an `include` line: its one pattern, or why the line is wrong.
fn include_pattern(line: &Line) -> Option<Result<String, String>> {
    match line.words.as_slice() {
        [Word::Text(k), rest @ ..] if k == "include" => Some(match rest {
            [Word::Text(p)] => Ok(p.clone()),
            _ => Err("include takes one file name or pattern".into()),
        }),
        _ => None,
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The files a pattern names, sorted, directories left out (as glob(3) with GLOB_MARK
/// and keepalived's check do).
pub fn expand(pattern: &Path, files: &dyn Files) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = match component {
            Component::Normal(p) => p.to_string_lossy().into_owned(),
            other => {
                for c in &mut current {
                    c.push(other.as_os_str());
                }
                continue;
            }
        };
        let mut next = Vec::new();
        for dir in &current {
            if !has_wildcard(&part) {
                next.push(dir.join(&part));
                continue;
            }
            let listing = if dir.as_os_str().is_empty() {
                files.list(Path::new("."))
            } else {
                files.list(dir)
            };
            let mut names: Vec<String> = listing
                .unwrap_or_default()
                .into_iter()
                .filter(|n| glob_match(&part, n) && (part.starts_with('.') || !n.starts_with('.')))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        current = next;
    }
    current
        .into_iter()
        .filter(|p| files.exists(p) && !files.is_dir(p))
        .collect()
}

/// Shell-style matching of one path component: `*`, `?` and `[...]` (with `!`/`^` and
/// ranges).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| match_from(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => match (class(&p[1..]), n.first()) {
            (Some((matches, len)), Some(c)) => matches(*c) && match_from(&p[1 + len..], &n[1..]),
            (None, Some(c)) => *c == '[' && match_from(&p[1..], &n[1..]),
            (_, None) => false,
        },
        Some(c) => n.first() == Some(c) && match_from(&p[1..], &n[1..]),
    }
}

/// A `[...]` class after its `[`: a matcher and how many pattern chars it used.
type Class = (Box<dyn Fn(char) -> bool>, usize);

fn class(p: &[char]) -> Option<Class> {
    let negate = matches!(p.first(), Some('!' | '^'));
    let start = usize::from(negate);
    // A `]` right after the opening (or the negation) is a member, not the end.
    let end = p
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(_, c)| **c == ']')
        .map(|(i, _)| i)?;
    let members: Vec<char> = p[start..end].to_vec();
    let matcher = move |c: char| {
        let mut hit = false;
        let mut i = 0;
        while i < members.len() {
            if i + 2 < members.len() && members[i + 1] == '-' {
                hit |= members[i] <= c && c <= members[i + 2];
                i += 3;
            } else {
                hit |= members[i] == c;
                i += 1;
            }
        }
        hit != negate
    };
    Some((Box::new(matcher), end + 1))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Files in memory; a path ending in `/` is a directory.
    pub struct Memory(pub BTreeMap<String, String>);

    impl Memory {
        pub fn new(files: &[(&str, &str)]) -> Self {
            Self(
                files
                    .iter()
                    .map(|(p, t)| (p.to_string(), t.to_string()))
                    .collect(),
            )
        }
        fn key(path: &Path) -> String {
            normalize(path).display().to_string()
        }
    }

    fn normalize(path: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other.as_os_str()),
            }
        }
        out
    }

    impl Files for Memory {
        fn read(&self, path: &Path) -> Result<String, String> {
            self.0
                .get(&Self::key(path))
                .cloned()
                .ok_or_else(|| "No such file or directory".into())
        }
        fn list(&self, dir: &Path) -> Result<Vec<String>, String> {
            let prefix = format!("{}/", Self::key(dir));
            let prefix = if prefix == "/" || prefix == "./" {
                String::new()
            } else {
                prefix
            };
            let mut names: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
                .collect();
            names.dedup();
            Ok(names)
        }
        fn is_dir(&self, path: &Path) -> bool {
            let prefix = format!("{}/", Self::key(path));
            self.0.keys().any(|k| k.starts_with(&prefix))
        }
        fn exists(&self, path: &Path) -> bool {
            self.0.contains_key(&Self::key(path)) || self.is_dir(path)
        }
        fn canonical(&self, path: &Path) -> PathBuf {
            normalize(path)
        }
    }

    fn words(located: &[Located]) -> Vec<(String, usize, String)> {
        located
            .iter()
            .map(|l| {
                let first = match &l.line.words[0] {
                    Word::Text(t) => t.clone(),
                    other => format!("{other:?}"),
                };
                (l.file.clone(), l.line.line, first)
            })
            .collect()
    }

    #[test]
    fn glob_matching() {
        let cases = [
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.bak", false),
            ("node?.conf", "node1.conf", true),
            ("node?.conf", "node10.conf", false),
            ("[ab]*", "b1", true),
            ("[!ab]*", "b1", false),
            ("[0-9].conf", "7.conf", true),
            ("[0-9].conf", "x.conf", false),
            ("plain", "plain", true),
            ("[", "[", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn includes_are_relative_sorted_and_keep_their_lines() {
        let files = Memory::new(&[
            ("site/node1.conf", "a\ninclude conf.d/*.conf\nz\n"),
            ("site/conf.d/20-b.conf", "b\n"),
            ("site/conf.d/10-a.conf", "\n# c\nx\ninclude ../common.inc\n"),
            ("site/conf.d/notes.txt", "never\n"),
            ("site/common.inc", "common\n"),
        ]);
        let got = words(&load(Path::new("site/node1.conf"), &files).unwrap());
        let want = [
            ("site/node1.conf", 1, "a"),
            ("site/conf.d/10-a.conf", 3, "x"),
            ("site/conf.d/../common.inc", 1, "common"),
            ("site/conf.d/20-b.conf", 1, "b"),
            ("site/node1.conf", 3, "z"),
        ];
        let want: Vec<(String, usize, String)> = want
            .iter()
            .map(|(f, l, w)| (f.to_string(), *l, w.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn include_errors_name_the_including_line() {
        type Case<'a> = (&'a [(&'a str, &'a str)], usize, &'a str);
        let cases: &[Case] = &[
            (
                &[("k.conf", "a\ninclude missing.conf\n")],
                2,
                "no such file",
            ),
            (&[("k.conf", "include k.conf\n")], 1, "include cycle"),
            (
                &[
                    ("k.conf", "include b.conf\n"),
                    ("b.conf", "x\n\ninclude k.conf\n"),
                ],
                3,
                "include cycle",
            ),
            (&[("k.conf", "include a b\n")], 1, "one file name"),
        ];
        for (files, line, message) in cases {
            let e = load(Path::new("k.conf"), &Memory::new(files)).unwrap_err();
            assert_eq!(e.line, *line, "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        // A pattern matching nothing is not an error (as in keepalived).
        let files = Memory::new(&[("k.conf", "include conf.d/*.conf\nx\n")]);
        assert_eq!(load(Path::new("k.conf"), &files).unwrap().len(), 1);
    }

    #[test]
    fn depth_is_bounded() {
        let names: Vec<String> = (0..=MAX_DEPTH).map(|i| format!("f{i}.conf")).collect();
        let texts: Vec<String> = (0..=MAX_DEPTH)
            .map(|i| format!("include f{}.conf\n", i + 1))
            .collect();
        let files: Vec<(&str, &str)> = names
            .iter()
            .zip(&texts)
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let e = load(Path::new("f0.conf"), &Memory::new(&files)).unwrap_err();
        assert!(e.message.contains("deeper"), "{e}");
    }
}
