//! What became of each source line, collected while mapping and folded into one report
//! entry per line: a `defaults` line used by several proxies, or a `server` line with
//! several options, names every field it reached and every way it differs.

use std::collections::BTreeMap;

use crate::import::{Outcome, Report, Source};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Note {
    directive: String,
    fields: Vec<String>,
    hows: Vec<String>,
    whys: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Notes {
    lines: BTreeMap<usize, Note>,
}

fn push_new(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl Notes {
    fn note(&mut self, line: usize, directive: &str) -> &mut Note {
        let note = self.lines.entry(line).or_default();
        if note.directive.is_empty() {
            note.directive = directive.to_string();
        }
        note
    }

    pub fn mapped(&mut self, line: usize, directive: &str, field: impl Into<String>) {
        push_new(&mut self.note(line, directive).fields, field.into());
    }

    pub fn approximated(
        &mut self,
        line: usize,
        directive: &str,
        field: impl Into<String>,
        how: impl Into<String>,
    ) {
        let note = self.note(line, directive);
        push_new(&mut note.fields, field.into());
        push_new(&mut note.hows, how.into());
    }

    /// A part of the line (or all of it) that did not carry over.
    pub fn unsupported(&mut self, line: usize, directive: &str, why: impl Into<String>) {
        push_new(&mut self.note(line, directive).whys, why.into());
    }

    pub fn seen(&self, line: usize) -> bool {
        self.lines.contains_key(&line)
    }

    /// One entry per line, in line order: mapped only when nothing differs.
    pub fn into_report(self, file: &str) -> Report {
        let mut report = Report::default();
        for (line, note) in self.lines {
            let source = Source {
                file: file.to_string(),
                line,
            };
            let Note {
                directive,
                fields,
                mut hows,
                whys,
            } = note;
            let outcome = if fields.is_empty() {
                Outcome::Unsupported {
                    why: whys.join("; "),
                }
            } else if hows.is_empty() && whys.is_empty() {
                Outcome::Mapped {
                    field: fields.join(", "),
                }
            } else {
                hows.extend(whys.into_iter().map(|w| format!("not carried over: {w}")));
                Outcome::Approximated {
                    field: fields.join(", "),
                    how: hows.join("; "),
                }
            };
            report.push(source, directive, outcome);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_mapped_only_when_nothing_about_it_differs() {
        let mut n = Notes::default();
        n.mapped(3, "timeout connect 5s", "a.timeouts.connect");
        n.mapped(3, "timeout connect 5s", "b.timeouts.connect");
        n.mapped(
            5,
            "server s1 10.0.0.1:80 check fastinter 1s",
            "g.backends[0]",
        );
        n.approximated(5, "server s1 ...", "g.healthCheck", "no fastinter");
        n.mapped(7, "bind :443 ssl crt x npn h2", "l.tls");
        n.unsupported(7, "bind", "npn");
        n.unsupported(9, "userlist admins", "no users in Halo");
        assert!(n.seen(5) && !n.seen(4));
        let r = n.into_report("h.cfg");
        let outcomes: Vec<&Outcome> = r.entries.iter().map(|e| &e.outcome).collect();
        assert_eq!(
            outcomes,
            [
                &Outcome::Mapped {
                    field: "a.timeouts.connect, b.timeouts.connect".into()
                },
                &Outcome::Approximated {
                    field: "g.backends[0], g.healthCheck".into(),
                    how: "no fastinter".into()
                },
                &Outcome::Approximated {
                    field: "l.tls".into(),
                    how: "not carried over: npn".into()
                },
                &Outcome::Unsupported {
                    why: "no users in Halo".into()
                },
            ]
        );
        assert_eq!(
            r.entries[1].directive,
            "server s1 10.0.0.1:80 check fastinter 1s"
        );
    }
}
