//! The framing of stdio MCP (and of the servers behind the Streamable HTTP listener): one JSON-RPC message
//! a line, each way, bounded in length.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest line accepted from either side; a longer one is refused and skipped.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;

/// One line from a peer.
pub(crate) enum Frame {
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE`] (skipped up to its end); its length so far.
    TooLong(usize),
    Error(std::io::Error),
    Eof,
}

/// Reads one line of at most [`MAX_LINE`] bytes, without buffering more than that.
pub(crate) async fn read_frame<R: AsyncBufRead + Unpin>(input: &mut R, buf: &mut Vec<u8>) -> Frame {
    buf.clear();
    let mut too_long = 0usize;
    loop {
        let chunk = match input.fill_buf().await {
            Ok(c) => c,
            Err(e) => return Frame::Error(e),
        };
        if chunk.is_empty() {
            return match (too_long, buf.is_empty()) {
                (0, true) => Frame::Eof,
                (0, false) => Frame::Line(std::mem::take(buf)),
                (n, _) => Frame::TooLong(n),
            };
        }
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if too_long > 0 || buf.len() + part.len() > MAX_LINE {
            too_long += buf.len() + part.len();
            buf.clear();
        } else {
            buf.extend_from_slice(part);
        }
        let consumed = done.unwrap_or(chunk.len());
        input.consume(consumed);
        if done.is_some() {
            if too_long > 0 {
                return Frame::TooLong(too_long);
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Frame::Line(std::mem::take(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn frames_are_bounded_and_the_reader_goes_on() {
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.extend_from_slice(b"\n{\"a\":1}\r\nlast");
        let mut input = BufReader::new(&big[..]);
        let mut buf = Vec::new();
        assert!(
            matches!(read_frame(&mut input, &mut buf).await, Frame::TooLong(n) if n == MAX_LINE + 10)
        );
        assert!(
            matches!(read_frame(&mut input, &mut buf).await, Frame::Line(l) if l == b"{\"a\":1}")
        );
        assert!(matches!(read_frame(&mut input, &mut buf).await, Frame::Line(l) if l == b"last"));
        assert!(matches!(read_frame(&mut input, &mut buf).await, Frame::Eof));
    }
}
