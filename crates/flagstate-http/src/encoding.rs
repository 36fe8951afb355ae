//! Content negotiation for compressed responses: reading `Accept-Encoding` (with
//! q-values) and compressing bodies with gzip, zstd or brotli.
//!
//! Hand-written rather than taken from `tower-http`'s compression layer because compressed
//! index bodies are cached next to the uncompressed one (compressing a multi-megabyte
//! index on every request would dominate the cost of answering it), and the layer
//! compresses per response.

use std::io::Write;

use axum::http::HeaderMap;
use axum::http::header::ACCEPT_ENCODING;

/// A content coding this server can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// No compression.
    Identity,
    /// `gzip` (what Flatpak asks for).
    Gzip,
    /// `zstd`.
    Zstd,
    /// `br` (brotli).
    Brotli,
}

impl Coding {
    /// The token used in `Content-Encoding`, or `None` for identity.
    pub fn header_token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Zstd => Some("zstd"),
            Coding::Brotli => Some("br"),
        }
    }

    /// Suffix appended to the ETag of this representation (different bytes need a
    /// different strong validator).
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Gzip => "-gzip",
            Coding::Zstd => "-zstd",
            Coding::Brotli => "-br",
        }
    }

    /// Every compressed coding, in order of preference when a client weighs them equally.
    pub const COMPRESSED: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];
}

/// Parses a q-value (`0`, `0.5`, `1`, `1.000`); malformed values count as `0`, so a
/// coding with a garbled weight is not used.
fn parse_q(raw: &str) -> f32 {
    match raw.trim().parse::<f32>() {
        Ok(q) if (0.0..=1.0).contains(&q) => q,
        _ => 0.0,
    }
}

/// Picks the coding for a response from the request's `Accept-Encoding` headers.
///
/// The compressed coding with the highest q-value wins (`*` stands for codings not
/// listed; ties go to brotli, then zstd, then gzip); `q=0` excludes a coding. When no
/// compressed coding is acceptable the body is sent as identity, even if the client
/// excluded identity too (RFC 9110 allows this rather than a `406`).
pub fn negotiate(headers: &HeaderMap) -> Coding {
    let mut weights: Vec<(String, f32)> = Vec::new();
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let mut q = 1.0;
            for param in parts {
                if let Some((name, value)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    q = parse_q(value);
                }
            }
            weights.push((token, q));
        }
    }
    let weight_of = |name: &str| {
        weights
            .iter()
            .find(|(t, _)| t == name)
            .or_else(|| weights.iter().find(|(t, _)| t == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let mut best = (Coding::Identity, 0.0f32);
    for coding in Coding::COMPRESSED {
        let Some(token) = coding.header_token() else {
            continue;
        };
        let q = weight_of(token);
        if q > best.1 {
            best = (coding, q);
        }
    }
    best.0
}

/// Compresses `body` in `coding` (identity copies it).
pub fn compress(coding: Coding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    compress_into(coding, body, Vec::with_capacity(body.len() / 4))
}

/// Compresses everything `input` reads in `coding` into `out`, a piece at a time, and
/// hands `out` back; the memory it takes does not grow with the input.
pub fn compress_into<R: std::io::Read, W: Write>(
    coding: Coding,
    mut input: R,
    mut out: W,
) -> std::io::Result<W> {
    match coding {
        Coding::Identity => {
            std::io::copy(&mut input, &mut out)?;
            Ok(out)
        }
        Coding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            std::io::copy(&mut input, &mut encoder)?;
            encoder.finish()
        }
        Coding::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
            std::io::copy(&mut input, &mut encoder)?;
            encoder.finish()
        }
        Coding::Brotli => {
            // Quality 5 keeps compressing a multi-megabyte index well under a second;
            // the result is cached, but an event storm re-compresses after each change.
            let mut writer = brotli::CompressorWriter::new(out, 64 * 1024, 5, 22);
            std::io::copy(&mut input, &mut writer)?;
            writer.flush()?;
            Ok(writer.into_inner())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Read;

    fn pick(values: &[&str]) -> Coding {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        negotiate(&headers)
    }

    #[test]
    fn negotiation_follows_q_values() {
        assert_eq!(pick(&[]), Coding::Identity);
        assert_eq!(pick(&["gzip"]), Coding::Gzip);
        assert_eq!(pick(&["gzip, deflate"]), Coding::Gzip);
        assert_eq!(pick(&["deflate, gzip, br, zstd"]), Coding::Brotli);
        assert_eq!(pick(&["gzip;q=1.0, zstd;q=0.5"]), Coding::Gzip);
        assert_eq!(pick(&["gzip;q=0.2", "zstd;q=0.9"]), Coding::Zstd);
        assert_eq!(pick(&["gzip;q=0"]), Coding::Identity);
        assert_eq!(pick(&["*"]), Coding::Brotli);
        assert_eq!(pick(&["*;q=0.5, br;q=0"]), Coding::Zstd);
        assert_eq!(pick(&["identity"]), Coding::Identity);
        assert_eq!(pick(&["identity;q=0"]), Coding::Identity);
        assert_eq!(pick(&["GZIP ; Q=0.7"]), Coding::Gzip);
        assert_eq!(pick(&["gzip;q=abc"]), Coding::Identity);
        assert_eq!(pick(&["gzip;q=2"]), Coding::Identity);
        assert_eq!(pick(&[",,;, ;q=1"]), Coding::Identity);
    }

    #[test]
    fn compressions_round_trip() {
        let body = br#"{"Registry":"/","Results":[]}"#.repeat(100);
        let gz = compress(Coding::Gzip, &body).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let zs = compress(Coding::Zstd, &body).unwrap();
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), body);
        let br = compress(Coding::Brotli, &body).unwrap();
        let mut out = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        assert!(gz.len() < body.len() && zs.len() < body.len() && br.len() < body.len());
    }
}
