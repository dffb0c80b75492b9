//! The import report: one entry per source directive saying whether and how it carried
//! over, printed for people (text) or tools (JSON), and the exit status it implies.

use std::fmt;

use serde::Serialize;

/// What became of one directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// Carried over with the same meaning, to this field of the output.
    Mapped { field: String },
    /// Carried over to `field`, but it behaves differently: `how`.
    Approximated { field: String, how: String },
    /// Not carried over: `why`, and what to do instead.
    Unsupported { why: String },
}

/// Where a directive came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub file: String,
    /// 1-based; a directive continued over several lines reports its first.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    #[serde(flatten)]
    pub source: Source,
    /// The directive as written (keyword and arguments, whitespace collapsed).
    pub directive: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub entries: Vec<Entry>,
}

/// `halo-dataplane import` exit statuses.
pub const EXIT_ALL_MAPPED: u8 = 0;
/// A source file could not be read or parsed.
pub const EXIT_PARSE_ERROR: u8 = 2;
pub const EXIT_INCOMPLETE: u8 = 3;

impl Report {
    pub fn push(&mut self, source: Source, directive: impl Into<String>, outcome: Outcome) {
        self.entries.push(Entry {
            source,
            directive: directive.into(),
            outcome,
        });
    }

    pub fn mapped(&mut self, source: Source, directive: impl Into<String>, field: &str) {
        self.push(
            source,
            directive,
            Outcome::Mapped {
                field: field.to_string(),
            },
        );
    }

    pub fn approximated(
        &mut self,
        source: Source,
        directive: impl Into<String>,
        field: &str,
        how: impl Into<String>,
    ) {
        let outcome = Outcome::Approximated {
            field: field.to_string(),
            how: how.into(),
        };
        self.push(source, directive, outcome);
    }

    pub fn unsupported(
        &mut self,
        source: Source,
        directive: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.push(source, directive, Outcome::Unsupported { why: why.into() });
    }

    pub fn extend(&mut self, other: Report) {
        self.entries.extend(other.entries);
    }

    /// 0 when everything mapped, 3 when anything was approximated or left out.
    pub fn exit_code(&self) -> u8 {
        let complete = self
            .entries
            .iter()
            .all(|e| matches!(e.outcome, Outcome::Mapped { .. }));
        if complete {
            EXIT_ALL_MAPPED
        } else {
            EXIT_INCOMPLETE
        }
    }

    /// Counts of (mapped, approximated, unsupported).
    pub fn totals(&self) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for e in &self.entries {
            match e.outcome {
                Outcome::Mapped { .. } => t.0 += 1,
                Outcome::Approximated { .. } => t.1 += 1,
                Outcome::Unsupported { .. } => t.2 += 1,
            }
        }
        t
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (mapped, approximated, unsupported) = self.totals();
        serde_json::json!({
            "entries": self.entries,
            "mapped": mapped,
            "approximated": approximated,
            "unsupported": unsupported,
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Entry {
            source,
            directive,
            outcome,
        } = self;
        match outcome {
            Outcome::Mapped { field } => write!(f, "{source}: {directive}: mapped to {field}"),
            Outcome::Approximated { field, how } => {
                write!(f, "{source}: {directive}: approximated as {field}: {how}")
            }
            Outcome::Unsupported { why } => write!(f, "{source}: {directive}: unsupported: {why}"),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        let (mapped, approximated, unsupported) = self.totals();
        writeln!(
            f,
            "{mapped} mapped, {approximated} approximated, {unsupported} unsupported"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize) -> Source {
        Source {
            file: "haproxy.cfg".into(),
            line,
        }
    }

    #[test]
    fn exit_code_is_zero_only_when_everything_mapped() {
        let mut r = Report::default();
        assert_eq!(r.exit_code(), EXIT_ALL_MAPPED);
        r.mapped(at(1), "balance roundrobin", "spec.backendGroups[0].balance");
        assert_eq!(r.exit_code(), EXIT_ALL_MAPPED);
        r.approximated(
            at(2),
            "option mysql-check",
            "healthCheck.tcp",
            "connect only",
        );
        assert_eq!(r.exit_code(), EXIT_INCOMPLETE);
        let mut u = Report::default();
        u.unsupported(at(3), "userlist admins", "no basic auth; put it in the app");
        assert_eq!(u.exit_code(), EXIT_INCOMPLETE);
    }

    #[test]
    fn text_and_json_name_file_line_and_outcome() {
        let mut r = Report::default();
        r.mapped(
            at(7),
            "timeout connect 5s",
            "spec.listeners[0].timeouts.connect",
        );
        r.unsupported(at(9), "userlist admins", "no basic auth");
        let text = r.to_string();
        assert!(
            text.contains(
                "haproxy.cfg:7: timeout connect 5s: mapped to spec.listeners[0].timeouts.connect"
            ),
            "{text}"
        );
        assert!(
            text.contains("haproxy.cfg:9: userlist admins: unsupported: no basic auth"),
            "{text}"
        );
        assert!(
            text.ends_with("1 mapped, 0 approximated, 1 unsupported\n"),
            "{text}"
        );
        let json = r.to_json();
        assert_eq!(json["entries"][1]["outcome"], "unsupported");
        assert_eq!(json["entries"][1]["line"], 9);
        assert_eq!(
            json["entries"][0]["field"],
            "spec.listeners[0].timeouts.connect"
        );
        assert_eq!(json["unsupported"], 1);
    }
}
