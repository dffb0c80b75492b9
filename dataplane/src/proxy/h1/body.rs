//! Where a message body ends: a cursor over the bytes as they arrive, for each framing
//! (none, Content-Length, chunked, until close). Pure: it never reads or writes.

use super::chunked::{ChunkError, Scanner, Step};
use super::head::{RequestBody, ResponseBody};

#[derive(Clone, Debug)]
enum Kind {
    Done,
    Length(u64),
    Chunked(Scanner),
    UntilClose,
}

#[derive(Clone, Debug)]
pub struct Cursor {
    kind: Kind,
    /// Forward only chunk data, not the chunked framing (to an HTTP/1.0 client).
    dechunk: bool,
}

impl Cursor {
    pub fn request(body: RequestBody) -> Self {
        let kind = match body {
            RequestBody::None | RequestBody::Length(0) => Kind::Done,
            RequestBody::Length(n) => Kind::Length(n),
            RequestBody::Chunked => Kind::Chunked(Scanner::default()),
        };
        Self {
            kind,
            dechunk: false,
        }
    }

    pub fn response(body: ResponseBody, dechunk: bool) -> Self {
        let kind = match body {
            ResponseBody::None | ResponseBody::Length(0) => Kind::Done,
            ResponseBody::Length(n) => Kind::Length(n),
            ResponseBody::Chunked => Kind::Chunked(Scanner::default()),
            ResponseBody::UntilClose => Kind::UntilClose,
        };
        Self { kind, dechunk }
    }

    pub fn is_done(&self) -> bool {
        match &self.kind {
            Kind::Done => true,
            Kind::Chunked(s) => s.is_done(),
            _ => false,
        }
    }

    /// The body ends when the sender closes (true), or a close now cuts it (false).
    pub fn ends_at_close(&self) -> bool {
        matches!(self.kind, Kind::UntilClose)
    }

    /// The sender closed: a read-to-close body is complete.
    pub fn finish_at_close(&mut self) {
        if let Kind::UntilClose = self.kind {
            self.kind = Kind::Done;
        }
    }

    /// Consumes the body bytes at the start of `input`, appending what is to be
    /// forwarded to `out`; returns how many bytes of `input` were body.
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        match &mut self.kind {
            Kind::Done => Ok(0),
            Kind::Length(remaining) => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                out.extend_from_slice(&input[..n]);
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.kind = Kind::Done;
                }
                Ok(n)
            }
            Kind::UntilClose => {
                out.extend_from_slice(input);
                Ok(input.len())
            }
            Kind::Chunked(scanner) => {
                let mut used = 0;
                while used < input.len() && !scanner.is_done() {
                    let rest = &input[used..];
                    let (n, data) = match scanner.step(rest)? {
                        Step::Data(n) => (n, true),
                        Step::Framing(n) | Step::Done(n) => (n, false),
                        Step::NeedMore => break,
                    };
                    if data || !self.dechunk {
                        out.extend_from_slice(&rest[..n]);
                    }
                    used += n;
                }
                Ok(used)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        let mut out = Vec::new();
        let mut c = Cursor::request(RequestBody::Length(5));
        assert_eq!(c.advance(b"hel", &mut out), Ok(3));
        assert_eq!(c.advance(b"loGET", &mut out), Ok(2));
        assert!(c.is_done());
        assert_eq!(out, b"hello");

        let body = b"3\r\nabc\r\n0\r\n\r\nnext";
        for (dechunk, want) in [(false, &body[..13]), (true, b"abc".as_slice())] {
            let mut out = Vec::new();
            let mut c = Cursor::response(ResponseBody::Chunked, dechunk);
            assert_eq!(c.advance(body, &mut out), Ok(13));
            assert!(c.is_done());
            assert_eq!(out, want);
        }

        let mut c = Cursor::response(ResponseBody::UntilClose, false);
        let mut out = Vec::new();
        assert_eq!(c.advance(b"abc", &mut out), Ok(3));
        assert!(!c.is_done() && c.ends_at_close());
        c.finish_at_close();
        assert!(c.is_done());

        let mut c = Cursor::request(RequestBody::Chunked);
        assert!(c.advance(b"zz\r\n", &mut out).is_err());
        assert!(Cursor::request(RequestBody::None).is_done());
    }
}
