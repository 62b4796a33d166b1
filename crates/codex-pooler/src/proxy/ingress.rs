//! Reading client request bodies: the wire-size limit, bounded decompression
//! (`zstd`, `gzip`, `deflate`) with separate size, ratio and time limits, and
//! JSON parsing with precise errors.

use std::io::Read;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// Decompression must finish within this time.
pub const DECOMPRESSION_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Limits applied to one body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_wire_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_ratio: usize,
    pub time_limit: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Zstd,
    Gzip,
    Deflate,
}

fn encoding_of(headers: &HeaderMap) -> Result<Encoding, GatewayError> {
    let Some(value) = headers.get(axum::http::header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "zstd" => Ok(Encoding::Zstd),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        other => Err(GatewayError::UnsupportedContentEncoding(
            other.chars().take(40).collect(),
        )),
    }
}

/// Checks that a declared content type is JSON (a missing one is accepted).
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    match headers.get(axum::http::header::CONTENT_TYPE) {
        None => Ok(()),
        Some(v)
            if v.to_str()
                .unwrap_or("")
                .to_ascii_lowercase()
                .contains("json") =>
        {
            Ok(())
        }
        Some(_) => Err(GatewayError::UnsupportedMediaType),
    }
}

/// Reads the body within the wire limit and decompresses it if encoded.
/// Returns the plain bytes and the number of bytes received on the wire.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<(Bytes, usize), GatewayError> {
    let encoding = encoding_of(headers)?;
    let wire = read_wire(body, limits.max_wire_bytes)
        .await
        .map_err(|oversized| match (oversized, encoding) {
            (true, Encoding::Identity) => GatewayError::RequestTooLarge {
                limit: limits.max_wire_bytes,
            },
            (true, _) => GatewayError::CompressedRequestTooLarge {
                limit: limits.max_wire_bytes,
            },
            (false, _) => GatewayError::InvalidRequest {
                message: "request body could not be read".into(),
                param: None,
            },
        })?;
    let wire_len = wire.len();
    if encoding == Encoding::Identity {
        if wire_len > limits.max_decompressed_bytes {
            return Err(GatewayError::RequestTooLarge {
                limit: limits.max_decompressed_bytes,
            });
        }
        return Ok((wire, wire_len));
    }
    let plain = tokio::task::spawn_blocking(move || decompress(encoding, &wire, limits))
        .await
        .map_err(|_| GatewayError::Internal)??;
    Ok((Bytes::from(plain), wire_len))
}

/// Reads at most `limit` bytes. An oversized body is drained (up to a bound)
/// before the error is returned, so the client reads the 413 instead of
/// seeing its upload cut off. `Err(true)` means too large, `Err(false)` a
/// transport error.
async fn read_wire(body: Body, limit: usize) -> Result<Bytes, bool> {
    use futures_util::StreamExt;
    let drain_cap = limit.saturating_mul(4).max(16 * 1024 * 1024);
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| false)?;
        seen = seen.saturating_add(chunk.len());
        if seen > limit {
            if seen > drain_cap {
                return Err(true);
            }
            out = Vec::new();
            continue;
        }
        out.extend_from_slice(&chunk);
    }
    if seen > limit {
        Err(true)
    } else {
        Ok(Bytes::from(out))
    }
}

fn decompress(
    encoding: Encoding,
    wire: &[u8],
    limits: BodyLimits,
) -> Result<Vec<u8>, GatewayError> {
    let name = match encoding {
        Encoding::Zstd => "zstd",
        Encoding::Gzip => "gzip",
        Encoding::Deflate => "deflate",
        Encoding::Identity => "identity",
    };
    let mut reader: Box<dyn Read> = match encoding {
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::new(wire)
                .map_err(|_| GatewayError::InvalidCompressedBody(name))?,
        ),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(wire)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(wire)),
        Encoding::Identity => Box::new(wire),
    };
    let started = Instant::now();
    let ratio_cap = wire.len().max(1).saturating_mul(limits.max_ratio);
    let mut out = Vec::with_capacity(
        wire.len()
            .saturating_mul(4)
            .min(limits.max_decompressed_bytes),
    );
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|_| GatewayError::InvalidCompressedBody(name))?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > limits.max_decompressed_bytes {
            return Err(GatewayError::DecompressedRequestTooLarge {
                limit: limits.max_decompressed_bytes,
            });
        }
        if out.len() > ratio_cap {
            return Err(GatewayError::DecompressionRatioExceeded {
                limit: limits.max_ratio,
            });
        }
        if started.elapsed() > limits.time_limit {
            return Err(GatewayError::DecompressionTimeout);
        }
    }
}

/// Parses a JSON object body.
pub fn parse_json_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if bytes.is_empty() {
        return Err(GatewayError::InvalidRequest {
            message: "request body is empty; a JSON object is required".into(),
            param: None,
        });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::InvalidRequest {
            message: "request body must be a JSON object".into(),
            param: None,
        }),
        Err(err) => Err(GatewayError::InvalidRequest {
            message: format!(
                "request body is not valid JSON (line {}, column {})",
                err.line(),
                err.column()
            ),
            param: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn limits() -> BodyLimits {
        BodyLimits {
            max_wire_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 20,
            max_ratio: 100,
            time_limit: DECOMPRESSION_TIME_LIMIT,
        }
    }

    #[test]
    fn decompresses_zstd_and_gzip() {
        let plain = br#"{"model":"gpt-5.5","input":[]}"#.repeat(10);
        let z = zstd::encode_all(&plain[..], 3).expect("zstd");
        assert_eq!(
            decompress(Encoding::Zstd, &z, limits()).expect("zstd"),
            plain
        );
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        g.write_all(&plain).expect("write");
        let g = g.finish().expect("gzip");
        assert_eq!(
            decompress(Encoding::Gzip, &g, limits()).expect("gzip"),
            plain
        );
    }

    #[test]
    fn each_limit_has_its_own_error() {
        let bomb = vec![b'a'; 4 << 20];
        let z = zstd::encode_all(&bomb[..], 19).expect("zstd");
        let big = BodyLimits {
            max_ratio: 1_000_000,
            ..limits()
        };
        assert!(matches!(
            decompress(Encoding::Zstd, &z, big),
            Err(GatewayError::DecompressedRequestTooLarge { .. })
        ));
        let roomy = BodyLimits {
            max_decompressed_bytes: 8 << 20,
            ..limits()
        };
        assert!(matches!(
            decompress(Encoding::Zstd, &z, roomy),
            Err(GatewayError::DecompressionRatioExceeded { .. })
        ));
        let hurried = BodyLimits {
            max_decompressed_bytes: 8 << 20,
            max_ratio: 1_000_000,
            time_limit: Duration::ZERO,
            ..limits()
        };
        assert!(matches!(
            decompress(Encoding::Zstd, &z, hurried),
            Err(GatewayError::DecompressionTimeout)
        ));
        assert!(matches!(
            decompress(Encoding::Zstd, b"not zstd", limits()),
            Err(GatewayError::InvalidCompressedBody("zstd"))
        ));
    }

    #[test]
    fn json_errors_are_precise() {
        assert!(parse_json_object(b"{}").is_ok());
        let err = parse_json_object(b"{\"a\":").expect_err("invalid");
        assert!(err.to_string().contains("not valid JSON"));
        assert!(parse_json_object(b"[1]").is_err());
    }
}
