//! Groups lexed lines into HAProxy sections and resolves which `defaults` each proxy
//! inherits: the last one before it, or the named one of `from NAME`.

use super::lex::Line;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    /// userlist, peers, resolvers, mailers, ...: nothing in Halo takes them.
    Other,
}

impl Kind {
    fn of(keyword: &str) -> Option<Kind> {
        Some(match keyword {
            "global" => Kind::Global,
            "defaults" => Kind::Defaults,
            "frontend" => Kind::Frontend,
            "backend" => Kind::Backend,
            "listen" => Kind::Listen,
            "userlist" | "peers" | "resolvers" | "mailers" | "program" | "http-errors" | "ring"
            | "cache" | "fcgi-app" | "crt-store" | "traces" | "log-forward" => Kind::Other,
            _ => return None,
        })
    }

    pub fn is_proxy(self) -> bool {
        matches!(self, Kind::Frontend | Kind::Backend | Kind::Listen)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: Kind,
    /// The section's own line (`frontend web from base`).
    pub header: Line,
    pub name: Option<String>,
    /// Index into the section list of the defaults this one inherits from.
    pub defaults: Option<usize>,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SectionError {
    pub line: usize,
    pub message: String,
}

fn error(line: &Line, message: impl Into<String>) -> SectionError {
    SectionError {
        line: line.number,
        message: message.into(),
    }
}

/// Splits the lines into sections. A directive before the first section, a proxy without
/// a name, or `from` naming no earlier named defaults is an error (HAProxy refuses them).
pub fn split(lines: Vec<Line>) -> Result<Vec<Section>, SectionError> {
    let mut out: Vec<Section> = Vec::new();
    let mut last_defaults: Option<usize> = None;
    for line in lines {
        let Some(kind) = Kind::of(&line.words[0]) else {
            match out.last_mut() {
                Some(section) => section.lines.push(line),
                None => {
                    return Err(error(
                        &line,
                        format!("{:?} outside any section", line.words[0]),
                    ));
                }
            }
            continue;
        };
        let section = header(kind, line, &out, last_defaults)?;
        if kind == Kind::Defaults {
            last_defaults = Some(out.len());
        }
        out.push(section);
    }
    Ok(out)
}

fn header(
    kind: Kind,
    line: Line,
    earlier: &[Section],
    last_defaults: Option<usize>,
) -> Result<Section, SectionError> {
    let (name, from) = match (line.word(1), line.word(2), line.word(3)) {
        (Some("from"), Some(from), _) if kind == Kind::Defaults => (None, Some(from)),
        (Some(name), Some("from"), Some(from)) => (Some(name), Some(from)),
        (Some(_), Some("from"), None) => return Err(error(&line, "\"from\" needs a name")),
        (name, _, _) => (name, None),
    };
    if kind.is_proxy() && name.is_none() {
        return Err(error(&line, format!("{} needs a name", line.words[0])));
    }
    let defaults = match from {
        Some(from) => Some(named_defaults(earlier, from).ok_or_else(|| {
            error(
                &line,
                format!("no defaults section named {from:?} before this line"),
            )
        })?),
        // Without `from`, only a proxy inherits: a defaults section starts afresh.
        None if !kind.is_proxy() => None,
        None => last_defaults,
    };
    Ok(Section {
        kind,
        name: name.map(str::to_string),
        header: line,
        defaults,
        lines: Vec::new(),
    })
}

fn named_defaults(sections: &[Section], name: &str) -> Option<usize> {
    sections
        .iter()
        .rposition(|s| s.kind == Kind::Defaults && s.name.as_deref() == Some(name))
}

/// The lines a proxy sees: its defaults chain first (outermost first), then its own, so
/// that the last occurrence of a keyword is the one that applies.
pub fn effective(sections: &[Section], index: usize) -> Vec<&Line> {
    let mut chain = Vec::new();
    let mut at = sections.get(index).and_then(|s| s.defaults);
    // A defaults section can only name an earlier one, so the chain ends; bound it anyway.
    while let Some(i) = at.filter(|_| chain.len() < sections.len()) {
        chain.push(i);
        at = sections[i].defaults.filter(|&d| d < i);
    }
    let mut out: Vec<&Line> = Vec::new();
    for &i in chain.iter().rev() {
        out.extend(sections[i].lines.iter());
    }
    if let Some(s) = sections.get(index) {
        out.extend(s.lines.iter());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::haproxy::lex::lex;

    fn sections(text: &str) -> Result<Vec<Section>, SectionError> {
        split(lex(text, &|_| None).expect("lexes"))
    }

    #[test]
    fn proxies_inherit_the_last_or_the_named_defaults() {
        let text = "global\n maxconn 1\ndefaults base\n mode http\n timeout client 1s\n\
                    defaults tcp from base\n mode tcp\ndefaults\n timeout client 2s\n\
                    frontend a\n bind :80\nbackend b from tcp\n server s 1.2.3.4:5\n";
        let s = sections(text).expect("splits");
        let kinds: Vec<Kind> = s.iter().map(|s| s.kind).collect();
        use Kind::*;
        assert_eq!(
            kinds,
            [Global, Defaults, Defaults, Defaults, Frontend, Backend]
        );
        assert_eq!(
            (s[4].defaults, s[5].defaults, s[2].defaults),
            (Some(3), Some(2), Some(1))
        );
        let seen = |i| -> Vec<usize> { effective(&s, i).iter().map(|l| l.number).collect() };
        assert_eq!(seen(4), [9, 11]);
        assert_eq!(seen(5), [4, 5, 7, 13]);
        assert_eq!(s[5].name.as_deref(), Some("b"));
    }

    #[test]
    fn unknown_sections_are_kept_as_other() {
        let s = sections("userlist admins\n user a password x\npeers p\n peer a 1.2.3.4:1\n")
            .expect("splits");
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.kind == Kind::Other));
        assert_eq!(s[0].lines[0].number, 2);
    }

    #[test]
    fn structural_errors_name_the_line() {
        for (text, line, message) in [
            ("maxconn 1\n", 1, "\"maxconn\" outside any section"),
            ("global\nfrontend\n", 2, "frontend needs a name"),
            (
                "defaults a\nbackend b from c\n",
                2,
                "no defaults section named \"c\" before this line",
            ),
            ("backend b from\n", 1, "\"from\" needs a name"),
        ] {
            let err = sections(text).expect_err(text);
            assert_eq!((err.line, err.message.as_str()), (line, message), "{text}");
        }
    }
}
