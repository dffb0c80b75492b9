//! The chunked transfer coding (RFC 9112 §7.1) as an incremental scanner: it tells how
//! many of the next bytes are chunk data and how many are framing, so a body can be
//! forwarded as it came (or with the framing dropped) without buffering it.

/// What the next bytes of a chunked body are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// This many bytes of chunk data.
    Data(usize),
    /// This many bytes of chunk sizes, extensions, CRLFs or trailer fields.
    Framing(usize),
    /// The last `n` bytes of framing: the body ends after them.
    Done(usize),
    /// Nothing can be decided until more bytes arrive.
    NeedMore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct ChunkError(pub &'static str);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// Whitespace after the size (BWS before `;`).
    SizeSpace,
    /// In a chunk extension, up to CR.
    Extension,
    /// CR seen after the size line: LF must follow.
    SizeLf,
    /// Inside chunk data.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Trailer fields are small; a body that keeps sending them is an attack.
const MAX_TRAILERS: usize = 16 * 1024;
/// 16 hex digits fill a u64.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Clone, Debug)]
pub struct Scanner {
    state: State,
    size: u64,
    remaining: u64,
    trailer_bytes: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            trailer_bytes: 0,
        }
    }
}

impl Scanner {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Looks at the start of `input` and says what its first bytes are. Call again
    /// with the rest after consuming the step's bytes.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        if self.state == State::Data {
            if input.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            self.remaining -= n as u64;
            if self.remaining == 0 {
                self.state = State::DataCr;
            }
            return Ok(Step::Data(n));
        }
        let mut used = 0;
        for &b in input {
            used += 1;
            self.framing_byte(b)?;
            match self.state {
                State::Data => return Ok(Step::Framing(used)),
                State::Done => return Ok(Step::Done(used)),
                _ => {}
            }
        }
        Ok(if used == 0 {
            Step::NeedMore
        } else {
            Step::Framing(used)
        })
    }

    fn framing_byte(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, b) {
            (State::Size { digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= MAX_SIZE_DIGITS {
                    return Err(ChunkError("chunk size too large"));
                }
                let v = (b as char).to_digit(16).unwrap_or(0);
                self.size = (self.size << 4) | u64::from(v);
                State::Size { digits: digits + 1 }
            }
            (State::Size { digits: 0 }, _) => return Err(ChunkError("chunk size is not hex")),
            (State::Size { .. } | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::Size { .. } | State::SizeSpace, b';') => State::Extension,
            (State::Size { .. } | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
            (State::Size { .. } | State::SizeSpace, _) => {
                return Err(ChunkError("bad byte after chunk size"));
            }
            (State::Extension, b'\n') => return Err(ChunkError("bare LF")),
            (State::Extension, b) if b < 0x20 && b != b'\t' => {
                return Err(ChunkError("control byte in chunk extension"));
            }
            (State::Extension, _) => State::Extension,
            (State::SizeLf, b'\n') => self.chunk_start(),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { digits: 0 },
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::FinalLf, b'\n') => State::Done,
            (State::TrailerLine, b'\r') => State::TrailerLf,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::TrailerStart | State::TrailerLine, b)
                if b == b'\n' || (b < 0x20 && b != b'\t') =>
            {
                return Err(ChunkError("bad byte in trailer"));
            }
            (State::TrailerStart | State::TrailerLine, _) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILERS {
                    return Err(ChunkError("trailer section too large"));
                }
                State::TrailerLine
            }
            (State::SizeLf | State::DataLf | State::TrailerLf | State::FinalLf, _) => {
                return Err(ChunkError("CR without LF"));
            }
            (State::DataCr, _) => return Err(ChunkError("chunk data longer than its size")),
            (State::Data | State::Done, _) => return Err(ChunkError("bytes after the end")),
        };
        Ok(())
    }

    fn chunk_start(&mut self) -> State {
        let size = std::mem::take(&mut self.size);
        if size == 0 {
            State::TrailerStart
        } else {
            self.remaining = size;
            State::Data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the scanner over `input` fed in pieces of `piece` bytes; returns the data
    /// bytes and whether the body ended, or the error.
    fn scan(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool, usize), ChunkError> {
        let mut s = Scanner::default();
        let mut data = Vec::new();
        let (mut pos, mut end) = (0, piece.min(input.len()));
        loop {
            if pos == end {
                if end == input.len() {
                    break;
                }
                end = (end + piece).min(input.len());
            }
            let window = &input[pos..end];
            match s.step(window)? {
                Step::Data(n) => {
                    data.extend_from_slice(&window[..n]);
                    pos += n;
                }
                Step::Framing(n) => pos += n,
                Step::Done(n) => return Ok((data, true, pos + n)),
                Step::NeedMore => break,
            }
        }
        Ok((data, s.is_done(), pos))
    }

    #[test]
    fn valid_bodies_in_any_piece_size() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
            ),
            (b"A \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", b"0123456789"),
            (b"0\r\n\r\n", b""),
        ];
        for (input, want) in cases {
            for piece in [1, 2, 3, 7, 100] {
                let (data, done, used) = scan(input, piece).expect("valid");
                assert_eq!(data, *want, "{input:?} piece {piece}");
                assert!(done, "{input:?}");
                assert_eq!(used, input.len());
            }
        }
    }

    #[test]
    fn invalid_bodies() {
        let cases: &[&[u8]] = &[
            b"x\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n",
            b"0\r\nX: 1\n\r\n",
            b"\r\n",
        ];
        for input in cases {
            assert!(scan(input, 100).is_err(), "{input:?} should be refused");
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (data, done, used) = scan(input, 100).expect("valid");
        assert_eq!(data, b"abc");
        assert!(done);
        assert_eq!(&input[used..], b"GET / HTTP/1.1\r\n");
    }
}
