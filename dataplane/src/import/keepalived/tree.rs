//! Builds the keepalived.conf statement tree from lexed lines: a statement is a keyword
//! and its arguments on one line, optionally followed by a `{ ... }` block that may open
//! on the same line or the next one and hold statements on the same line
//! (`virtual_ipaddress { 192.0.2.10/24 }`).

use super::include::Located;
use super::lexer::Word;
use crate::import::{ParseError, Source};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Node>>,
    pub at: Source,
}

impl Node {
    /// The directive as written, for the report.
    pub fn text(&self) -> String {
        let mut s = self.keyword.clone();
        for a in &self.args {
            s.push(' ');
            if a.contains(char::is_whitespace) || a.is_empty() {
                s.push('"');
                s.push_str(a);
                s.push('"');
            } else {
                s.push_str(a);
            }
        }
        s
    }

    pub fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }
}

struct Frame {
    node: Node,
    children: Vec<Node>,
}

/// Parses a whole configuration (includes already expanded).
pub fn parse(lines: &[Located]) -> Result<Vec<Node>, ParseError> {
    let mut top: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut pending: Option<Node> = None;
    for located in lines {
        let at = Source {
            file: located.file.clone(),
            line: located.line.line,
        };
        // Whether a word on this line may still be an argument of `pending`.
        let mut same_statement = false;
        for word in &located.line.words {
            match word {
                Word::Text(t) if same_statement => {
                    if let Some(p) = &mut pending {
                        p.args.push(t.clone());
                    }
                }
                Word::Text(t) => {
                    finish(&mut pending, &mut stack, &mut top);
                    pending = Some(Node {
                        keyword: t.clone(),
                        args: Vec::new(),
                        block: None,
                        at: at.clone(),
                    });
                    same_statement = true;
                }
                Word::Open => {
                    let node = pending.take().ok_or_else(|| {
                        ParseError::new(&at.file, at.line, "'{' without a keyword before it")
                    })?;
                    stack.push(Frame {
                        node,
                        children: Vec::new(),
                    });
                    same_statement = false;
                }
                Word::Close => {
                    finish(&mut pending, &mut stack, &mut top);
                    let mut frame = stack
                        .pop()
                        .ok_or_else(|| ParseError::new(&at.file, at.line, "'}' closes no block"))?;
                    frame.node.block = Some(frame.children);
                    push(frame.node, &mut stack, &mut top);
                    same_statement = false;
                }
            }
        }
    }
    finish(&mut pending, &mut stack, &mut top);
    if let Some(open) = stack.pop() {
        let at = open.node.at;
        return Err(ParseError::new(
            &at.file,
            at.line,
            format!("block of '{}' is never closed with '}}'", open.node.keyword),
        ));
    }
    Ok(top)
}

fn finish(pending: &mut Option<Node>, stack: &mut [Frame], top: &mut Vec<Node>) {
    if let Some(node) = pending.take() {
        push(node, stack, top);
    }
}

fn push(node: Node, stack: &mut [Frame], top: &mut Vec<Node>) {
    match stack.last_mut() {
        Some(frame) => frame.children.push(node),
        None => top.push(node),
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer;
    use super::*;

    fn tree(text: &str) -> Result<Vec<Node>, ParseError> {
        let lines: Vec<Located> = lexer::lex(text, "k.conf")?
            .into_iter()
            .map(|line| Located {
                file: "k.conf".into(),
                line,
            })
            .collect();
        parse(&lines)
    }

    /// A compact rendering: `kw(args)[line]{children}`.
    fn show(nodes: &[Node]) -> String {
        nodes
            .iter()
            .map(|n| {
                let mut s = format!("{}{:?}@{}", n.keyword, n.args, n.at.line);
                if let Some(b) = &n.block {
                    s.push_str(&format!("{{{}}}", show(b)));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn blocks_on_same_and_next_lines() {
        let cases = [
            ("a 1\nb", r#"a["1"]@1 b[]@2"#),
            ("v {\n x\n y 2\n}", r#"v[]@1{x[]@2 y["2"]@3}"#),
            ("v\n{\n x\n}", r#"v[]@1{x[]@3}"#),
            ("v { 192.0.2.1/24 }", r#"v[]@1{192.0.2.1/24[]@1}"#),
            ("v{a}w{b{c}}", r#"v[]@1{a[]@1} w[]@1{b[]@1{c[]@1}}"#),
            (
                "i VI_1 {\n u {\n  10.0.0.2\n }\n}",
                r#"i["VI_1"]@1{u[]@2{10.0.0.2[]@3}}"#,
            ),
            ("a {\n}\nb", r#"a[]@1{} b[]@3"#),
        ];
        for (text, want) in cases {
            assert_eq!(show(&tree(text).expect(text)), want, "{text}");
        }
    }

    #[test]
    fn unbalanced_braces_are_errors_with_the_line() {
        let cases = [
            ("a {\n b\n", 1, "never closed"),
            ("a {\n b {\n}\n", 1, "never closed"),
            ("a\n}\n", 2, "closes no block"),
            ("{\n", 1, "without a keyword"),
        ];
        for (text, line, message) in cases {
            let e = tree(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
    }

    #[test]
    fn text_quotes_arguments_with_blanks() {
        let nodes = tree("script \"killall -0 haproxy\"").unwrap();
        assert_eq!(nodes[0].text(), "script \"killall -0 haproxy\"");
    }
}
