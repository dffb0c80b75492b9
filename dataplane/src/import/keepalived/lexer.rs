//! keepalived.conf lexing as keepalived 2.x reads it: `#`/`!` comments outside double
//! quotes (`\#` and `\!` escape them), a trailing `\` continuing the line, words split on
//! blanks with `"..."`/`'...'` grouping, and `{`/`}` outside quotes as words of their own
//! even when written against another word.

use crate::import::ParseError;

/// One word of a logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    Text(String),
    Open,
    Close,
}

/// A logical line (continuations joined), numbered by its first physical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub line: usize,
    pub words: Vec<Word>,
}

/// Splits `text` (the contents of `file`) into logical lines of words.
pub fn lex(text: &str, file: &str) -> Result<Vec<Line>, ParseError> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let (content, continues) = decomment(raw);
        let (start, mut joined) = pending.take().unwrap_or((number, String::new()));
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(content.trim());
        if continues {
            pending = Some((start, joined));
            continue;
        }
        let words = split(&joined).map_err(|m| ParseError::new(file, start, m))?;
        if !words.is_empty() {
            out.push(Line { line: start, words });
        }
    }
    if let Some((start, joined)) = pending {
        let words = split(&joined).map_err(|m| ParseError::new(file, start, m))?;
        if !words.is_empty() {
            out.push(Line { line: start, words });
        }
    }
    Ok(out)
}

/// Drops a comment (outside double quotes) and unescapes `\#`/`\!`; says whether the
/// line ends in a continuation `\`.
fn decomment(line: &str) -> (String, bool) {
    let mut out = String::with_capacity(line.len());
    let mut quote = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' => match chars.next() {
                None => return (out, true),
                Some(n @ ('#' | '!')) if !quote => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
            },
            '#' | '!' if !quote => break,
            _ => out.push(c),
        }
    }
    (out, false)
}

/// Splits one decommented line into words. Backslashes are kept as written (keepalived
/// reads configuration words without escape processing).
pub fn split(line: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            match c {
                '\\' => {
                    current.push('\\');
                    if let Some(n) = chars.next() {
                        current.push(n);
                    }
                }
                _ if c == q => quote = None,
                _ => current.push(c),
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                in_word = true;
            }
            '{' | '}' => {
                if in_word {
                    words.push(Word::Text(std::mem::take(&mut current)));
                    in_word = false;
                }
                words.push(if c == '{' { Word::Open } else { Word::Close });
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(Word::Text(std::mem::take(&mut current)));
                    in_word = false;
                }
            }
            '\\' => {
                current.push('\\');
                if let Some(n) = chars.next() {
                    current.push(n);
                }
                in_word = true;
            }
            _ => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("missing terminating {q}"));
    }
    if in_word {
        words.push(Word::Text(current));
    }
    Ok(words)
}

/// Splits a command line into words the way keepalived splits a `script` (quotes group,
/// no shell): the text words only.
pub fn argv(command: &str) -> Result<Vec<String>, String> {
    Ok(split(command)?
        .into_iter()
        .map(|w| match w {
            Word::Text(t) => t,
            Word::Open => "{".to_string(),
            Word::Close => "}".to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Word {
        Word::Text(s.into())
    }

    #[test]
    fn lines_words_comments_quotes_and_braces() {
        type Lines = Vec<(usize, Vec<Word>)>;
        let cases: &[(&str, Lines)] = &[
            ("a b\n", vec![(1, vec![t("a"), t("b")])]),
            ("\ta\t b  # comment\n", vec![(1, vec![t("a"), t("b")])]),
            ("! whole line\n# another\n\nx", vec![(4, vec![t("x")])]),
            ("a ! rest", vec![(1, vec![t("a")])]),
            ("a\\#b", vec![(1, vec![t("a#b")])]),
            (
                "script \"killall -0 haproxy # not a comment\"",
                vec![(
                    1,
                    vec![t("script"), t("killall -0 haproxy # not a comment")],
                )],
            ),
            ("x 'a b'c", vec![(1, vec![t("x"), t("a bc")])]),
            ("vi{", vec![(1, vec![t("vi"), Word::Open])]),
            (
                "v { 1.2.3.4/24 }",
                vec![(1, vec![t("v"), Word::Open, t("1.2.3.4/24"), Word::Close])],
            ),
            ("a \"{x}\"", vec![(1, vec![t("a"), t("{x}")])]),
            (
                "a b \\\n  c\nd",
                vec![(1, vec![t("a"), t("b"), t("c")]), (3, vec![t("d")])],
            ),
            ("a\\", vec![(1, vec![t("a")])]),
        ];
        for (text, want) in cases {
            let got: Lines = lex(text, "k.conf")
                .expect(text)
                .into_iter()
                .map(|l| (l.line, l.words))
                .collect();
            assert_eq!(&got, want, "{text:?}");
        }
    }

    #[test]
    fn unterminated_quote_names_file_and_line() {
        let e = lex("a\nscript \"killall -0\n", "n1.conf").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("n1.conf", 2));
        assert!(e.message.contains("missing terminating"), "{e}");
    }

    #[test]
    fn argv_splits_without_a_shell() {
        let cases: &[(&str, &[&str])] = &[
            ("killall -0 haproxy", &["killall", "-0", "haproxy"]),
            (
                "/bin/sh -c 'pidof haproxy || exit 1'",
                &["/bin/sh", "-c", "pidof haproxy || exit 1"],
            ),
            ("curl  -f\thttp://x/", &["curl", "-f", "http://x/"]),
        ];
        for (cmd, want) in cases {
            assert_eq!(&argv(cmd).unwrap(), want, "{cmd}");
        }
        assert!(argv("a 'b").is_err());
    }
}
