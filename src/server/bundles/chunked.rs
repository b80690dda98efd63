//! The `aws-chunked` content encoding S3 SDKs use for streaming uploads:
//!
//! ```text
//! <hex size>[;chunk-signature=<sig>]\r\n<data>\r\n ... 0[;chunk-signature=<sig>]\r\n
//! [<trailer-name>:<value>\r\n ...][x-amz-trailer-signature:<sig>\r\n]\r\n
//! ```
//!
//! A push decoder: fed the body's bytes as they arrive, it returns the
//! ranges that are object data, checks chunk signatures when the payload is
//! signed, and collects the trailing headers.

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::error::S3Error;
use super::sign::ChunkSigner;
use crate::protocol::sigv4::hex;

/// Longest chunk header or trailer line.
const MAX_LINE: usize = 4096;
/// Most trailing headers.
const MAX_TRAILERS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading a chunk header line.
    Header,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data: expecting `\r\n` (this many bytes of it seen).
    DataEnd(u8),
    /// After the last chunk: trailer lines until an empty one.
    Trailer,
    /// The final empty line was read.
    Done,
}

/// Decodes one aws-chunked body.
#[derive(Debug)]
pub struct Decoder {
    stage: Stage,
    line: Vec<u8>,
    signer: Option<ChunkSigner>,
    chunk_hash: Sha256,
    chunk_signature: Option<String>,
    trailers: Vec<(String, String)>,
    canonical_trailer: Vec<u8>,
    trailer_signed: bool,
}

fn malformed(what: &str) -> S3Error {
    S3Error::new(400, "InvalidChunkSizeError", format!("malformed aws-chunked body: {what}"))
}

fn bad_signature(what: &str) -> S3Error {
    S3Error::new(
        403,
        "SignatureDoesNotMatch",
        format!("The {what} signature we calculated does not match the signature you provided."),
    )
}

impl Decoder {
    /// A decoder; `signer` when the chunks are signed.
    pub fn new(signer: Option<ChunkSigner>) -> Decoder {
        Decoder {
            stage: Stage::Header,
            line: Vec::new(),
            signer,
            chunk_hash: Sha256::new(),
            chunk_signature: None,
            trailers: Vec::new(),
            canonical_trailer: Vec::new(),
            trailer_signed: false,
        }
    }

    /// Consumes `input`; returns the ranges of it that are object data.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<Range<usize>>, S3Error> {
        let mut data = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match self.stage {
                Stage::Header | Stage::Trailer => {
                    let Some(end) = self.take_line(input, &mut i)? else { continue };
                    let line = String::from_utf8(end).map_err(|_| malformed("a header line is not UTF-8"))?;
                    if self.stage == Stage::Header {
                        self.chunk_header(&line)?;
                    } else {
                        self.trailer_line(&line)?;
                    }
                }
                Stage::Data(left) => {
                    let available = input.len() - i;
                    let n = usize::try_from(left).map_or(available, |left| left.min(available));
                    let range = i..i + n;
                    self.chunk_hash.update(&input[range.clone()]);
                    data.push(range);
                    i += n;
                    let left = left - n as u64;
                    if left == 0 {
                        self.end_chunk()?;
                        self.stage = Stage::DataEnd(0);
                    } else {
                        self.stage = Stage::Data(left);
                    }
                }
                Stage::DataEnd(seen) => {
                    let expected = if seen == 0 { b'\r' } else { b'\n' };
                    if input[i] != expected {
                        return Err(malformed("chunk data is not followed by CRLF"));
                    }
                    i += 1;
                    self.stage = if seen == 0 { Stage::DataEnd(1) } else { Stage::Header };
                }
                Stage::Done => return Err(malformed("data after the final chunk")),
            }
        }
        Ok(data)
    }

    /// Accumulates a CRLF-terminated line; the line without CRLF once complete.
    fn take_line(&mut self, input: &[u8], i: &mut usize) -> Result<Option<Vec<u8>>, S3Error> {
        let rest = &input[*i..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.line.extend_from_slice(&rest[..nl]);
                *i += nl + 1;
                if self.line.pop() != Some(b'\r') {
                    return Err(malformed("a line does not end with CRLF"));
                }
                if self.line.len() > MAX_LINE {
                    return Err(malformed("line too long"));
                }
                Ok(Some(std::mem::take(&mut self.line)))
            }
            None => {
                self.line.extend_from_slice(rest);
                *i = input.len();
                if self.line.len() > MAX_LINE + 1 {
                    return Err(malformed("line too long"));
                }
                Ok(None)
            }
        }
    }

    fn chunk_header(&mut self, line: &str) -> Result<(), S3Error> {
        let mut parts = line.split(';');
        let size_hex = parts.next().unwrap_or_default().trim();
        if size_hex.is_empty() || size_hex.len() > 16 {
            return Err(malformed("bad chunk size"));
        }
        let size = u64::from_str_radix(size_hex, 16).map_err(|_| malformed("bad chunk size"))?;
        self.chunk_signature = None;
        for ext in parts {
            if let Some(sig) = ext.trim().strip_prefix("chunk-signature=") {
                self.chunk_signature = Some(sig.to_string());
            }
        }
        if self.signer.is_some() && self.chunk_signature.is_none() {
            return Err(bad_signature("chunk (missing chunk-signature)"));
        }
        self.chunk_hash = Sha256::new();
        if size == 0 {
            self.end_chunk()?;
            self.stage = Stage::Trailer;
        } else {
            self.stage = Stage::Data(size);
        }
        Ok(())
    }

    fn end_chunk(&mut self) -> Result<(), S3Error> {
        let hash = std::mem::take(&mut self.chunk_hash);
        if let Some(signer) = &mut self.signer {
            let sig = self.chunk_signature.take().unwrap_or_default();
            if !signer.verify_chunk(&hex(&hash.finalize()), &sig) {
                return Err(bad_signature("chunk"));
            }
        }
        Ok(())
    }

    fn trailer_line(&mut self, line: &str) -> Result<(), S3Error> {
        if line.is_empty() {
            if self.signer.is_some() && !self.trailers.is_empty() && !self.trailer_signed {
                return Err(bad_signature("trailer (missing x-amz-trailer-signature)"));
            }
            self.stage = Stage::Done;
            return Ok(());
        }
        let (name, value) = line.split_once(':').ok_or_else(|| malformed("trailer line without ':'"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "x-amz-trailer-signature" {
            if let Some(signer) = &mut self.signer
                && !signer.verify_trailer(&self.canonical_trailer, &value)
            {
                return Err(bad_signature("trailer"));
            }
            self.trailer_signed = true;
            return Ok(());
        }
        if self.trailers.len() >= MAX_TRAILERS {
            return Err(malformed("too many trailing headers"));
        }
        self.canonical_trailer.extend_from_slice(format!("{name}:{value}\n").as_bytes());
        self.trailers.push((name, value));
        Ok(())
    }

    /// Ends the body: the trailing headers, or an error when it stopped early.
    pub fn finish(self) -> Result<Vec<(String, String)>, S3Error> {
        match self.stage {
            Stage::Done => Ok(self.trailers),
            // Some encoders end right after the last chunk's line.
            Stage::Trailer if self.line.is_empty() && self.trailers.is_empty() => Ok(self.trailers),
            _ => Err(S3Error::new(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Decoded = (Vec<u8>, Vec<(String, String)>);

    fn decode(body: &[u8], split: usize, signer: Option<ChunkSigner>) -> Result<Decoded, S3Error> {
        let mut d = Decoder::new(signer);
        let mut out = Vec::new();
        for piece in body.chunks(split) {
            for r in d.feed(piece)? {
                out.extend_from_slice(&piece[r]);
            }
        }
        Ok((out, d.finish()?))
    }

    #[test]
    fn unsigned_with_trailer() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        for split in [1, 2, 3, 7, 100] {
            let (data, trailers) = decode(body, split, None).unwrap();
            assert_eq!(data, b"hello world");
            assert_eq!(trailers, vec![("x-amz-checksum-crc32".to_string(), "DUoRhQ==".to_string())]);
        }
        assert!(decode(b"5\r\nhello\r\n0\r\n", 4, None).is_ok());
        assert!(decode(b"5\r\nhel", 4, None).is_err());
        assert!(decode(b"5\r\nhelloXX0\r\n\r\n", 4, None).is_err());
        assert!(decode(b"zz\r\n", 4, None).is_err());
        assert!(decode(b"0\r\n\r\nmore", 4, None).is_err());
    }

    #[test]
    fn signed_chunks_are_checked() {
        let auth = crate::protocol::sigv4::Authorization {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            date: "20130524".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
            signed_headers: vec!["host".into()],
            signature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
        };
        let signer = ChunkSigner::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524T000000Z", &auth);
        let mut body =
            b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n".to_vec();
        body.extend_from_slice(&[b'a'; 65536]);
        body.extend_from_slice(
            b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n",
        );
        body.extend_from_slice(&[b'a'; 1024]);
        body.extend_from_slice(
            b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n",
        );
        let (data, _) = decode(&body, 1000, Some(signer.clone())).unwrap();
        assert_eq!(data.len(), 66560);
        let mut tampered = body.clone();
        tampered[200] = b'b';
        let err = decode(&tampered, 1000, Some(signer)).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }
}
