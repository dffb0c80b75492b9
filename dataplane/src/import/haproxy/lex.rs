//! Splits haproxy.cfg into lines of words the way HAProxy 2.x does (its `parse_line`):
//! `#` starts a comment unless quoted or escaped, `'...'` takes everything literally,
//! `"..."` still honours backslash escapes and `$VAR`/`${VAR}`/`${VAR-default}`, a
//! backslash escapes space, `#`, quotes, `$` and itself (`\r`, `\n`, `\t`, `\xHH` give
//! those bytes), and a trailing backslash does NOT continue the line: each physical line
//! is one directive.

/// One non-empty directive line: its 1-based number and its words after unquoting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub words: Vec<String>,
}

impl Line {
    /// The words joined by single spaces, for the report.
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    pub fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

/// Lexes a whole file; `env` looks up environment variables (HAProxy substitutes an
/// unset one with nothing).
pub fn lex(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Line>, LexError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let words = words(raw, env).map_err(|message| LexError {
            line: i + 1,
            message,
        })?;
        if !words.is_empty() {
            out.push(Line {
                number: i + 1,
                words,
            });
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// The words of one physical line.
fn words(line: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    // A word exists once anything (even an empty pair of quotes) was written for it.
    let mut started = false;
    let mut quote = Quote::None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Single, _) => word.push(c),
            (Quote::Double, '"') => quote = Quote::None,
            (Quote::None, '\'') => (quote, started) = (Quote::Single, true),
            (Quote::None, '"') => (quote, started) = (Quote::Double, true),
            (Quote::None, '#') => break,
            (Quote::None, ' ' | '\t') => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, '\\') => {
                i += escape(&chars[i + 1..], &mut word)?;
                started = true;
            }
            (_, '$') => {
                i += variable(&chars[i + 1..], &mut word, env)?;
                started = true;
            }
            _ => {
                word.push(c);
                started = true;
            }
        }
        i += 1;
    }
    match quote {
        Quote::Single => Err("unmatched single quote".into()),
        Quote::Double => Err("unmatched double quote".into()),
        Quote::None => {
            if started {
                out.push(word);
            }
            Ok(out)
        }
    }
}

/// Handles the characters after a backslash; returns how many it consumed.
fn escape(rest: &[char], word: &mut String) -> Result<usize, String> {
    match rest.first() {
        Some(&c @ (' ' | '\\' | '#' | '\'' | '"' | '$')) => {
            word.push(c);
            Ok(1)
        }
        Some('r') => Ok(push(word, '\r')),
        Some('n') => Ok(push(word, '\n')),
        Some('t') => Ok(push(word, '\t')),
        Some('x') => {
            let hex: String = rest.iter().skip(1).take(2).collect();
            let byte = (hex.len() == 2)
                .then(|| u8::from_str_radix(&hex, 16).ok())
                .flatten()
                .ok_or_else(|| format!("truncated or invalid \\x sequence \\x{hex}"))?;
            word.push(char::from(byte));
            Ok(3)
        }
        // Any other backslash (also one ending the line) stays as written.
        _ => {
            word.push('\\');
            Ok(0)
        }
    }
}

fn push(word: &mut String, c: char) -> usize {
    word.push(c);
    1
}

/// `$NAME` or `${NAME}` (outside single quotes); returns how many characters it consumed.
fn variable(
    rest: &[char],
    word: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<usize, String> {
    let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    let (name, used): (String, usize) = if rest.first() == Some(&'{') {
        let close = rest
            .iter()
            .position(|&c| c == '}')
            .ok_or("unterminated ${ variable")?;
        (rest[1..close].iter().collect(), close + 1)
    } else {
        let name: String = rest.iter().take_while(|c| is_name(c)).collect();
        let n = name.chars().count();
        (name, n)
    };
    // `${NAME-default}` (HAProxy 2.3+): the default when NAME is unset.
    let (name, default) = match name.split_once('-') {
        Some((n, d)) if rest.first() == Some(&'{') => (n.to_string(), Some(d.to_string())),
        _ => (name, None),
    };
    let starts_right = name.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if !starts_right || !name.chars().all(|c| is_name(&c)) {
        // Not a variable reference: the dollar is a plain character.
        word.push('$');
        return Ok(0);
    }
    word.push_str(&env(&name).or(default).unwrap_or_default());
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "8443".to_string())
    }

    fn lex_words(text: &str) -> Vec<Vec<String>> {
        lex(text, &env)
            .expect("lexes")
            .into_iter()
            .map(|l| l.words)
            .collect()
    }

    #[test]
    fn words_follow_haproxy_quoting_rules() {
        let cases: &[(&str, &[&str])] = &[
            ("  bind\t:80  ", &["bind", ":80"]),
            (
                "timeout client 30s # idle clients",
                &["timeout", "client", "30s"],
            ),
            ("acl a path_beg /x#y", &["acl", "a", "path_beg", "/x"]),
            (r"acl a path_beg /x\#y", &["acl", "a", "path_beg", "/x#y"]),
            (
                "acl a hdr(x) '#not a comment'",
                &["acl", "a", "hdr(x)", "#not a comment"],
            ),
            (r#"errorfile "a b" 'c\d'"#, &["errorfile", "a b", r"c\d"]),
            (r#"x "say \"hi\"""#, &["x", r#"say "hi""#]),
            (r"x a\ b", &["x", "a b"]),
            (r"x a\\b", &["x", r"a\b"]),
            (r"x a\qb", &["x", r"a\qb"]),
            (r"x \x41\t", &["x", "A\t"]),
            (r#"x "a"'b'c"#, &["x", "abc"]),
            (r#"x "" y"#, &["x", "", "y"]),
            (
                r#"bind ":${PORT}" "$PORT" '$PORT' $UNSET-"#,
                &["bind", ":8443", "8443", "$PORT", "-"],
            ),
            (r"x $1 \$PORT", &["x", "$1", "$PORT"]),
            ("x ${UNSET-80} ${PORT-80}", &["x", "80", "8443"]),
        ];
        for (input, want) in cases {
            let got = lex_words(input);
            assert_eq!(got, vec![want.to_vec()], "{input}");
        }
    }

    #[test]
    fn comments_and_blank_lines_vanish_and_numbers_stay_per_line() {
        let lines = lex("# top\n\nglobal\n\t# inside\n  maxconn 100\n", &env).expect("lexes");
        let numbers: Vec<usize> = lines.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [3, 5]);
        assert_eq!(lines[1].text(), "maxconn 100");
    }

    #[test]
    fn a_trailing_backslash_does_not_continue_the_line() {
        let lines = lex("acl a path /x \\\n  path /y\n", &env).expect("lexes");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].words, ["acl", "a", "path", "/x", "\\"]);
        assert_eq!((lines[1].number, lines[1].text()), (2, "path /y".into()));
    }

    #[test]
    fn unterminated_quotes_and_escapes_name_their_line() {
        for (input, line, message) in [
            ("global\n  x 'abc\n", 2, "unmatched single quote"),
            ("x \"abc", 1, "unmatched double quote"),
            ("\n\nx \\x4", 3, "truncated or invalid \\x sequence \\x4"),
            ("x ${PORT", 1, "unterminated ${ variable"),
        ] {
            let err = lex(input, &env).expect_err(input);
            assert_eq!((err.line, err.message.as_str()), (line, message), "{input}");
        }
    }
}
