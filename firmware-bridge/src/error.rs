//! The one error type of every decoder: which topic, where in the payload, and why.

use crate::value::ValueError;

/// A payload (or topic) that could not be decoded. Every variant names the MQTT topic; the
/// position is a byte offset into the payload or an RFC 6901 JSON pointer (`/ENERGY/Total`).
/// Decoding is deterministic, so none of these is worth retrying with the same bytes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{topic}: topic is not {expected}")]
    Topic {
        topic: String,
        expected: &'static str,
    },
    #[error("{topic}: malformed JSON at byte {offset}: {reason}")]
    Json {
        topic: String,
        offset: usize,
        reason: String,
    },
    #[error("{topic}: {pointer}: {reason}")]
    Field {
        topic: String,
        pointer: String,
        reason: String,
    },
    #[error("{topic}: {pointer}: {source}")]
    Value {
        topic: String,
        pointer: String,
        source: ValueError,
    },
    #[error("{topic}: payload byte {offset}: {reason}")]
    Bytes {
        topic: String,
        offset: usize,
        reason: &'static str,
    },
    #[error("{topic}: no sensor is known for this topic (learn it from discovery or configure it)")]
    Unmapped { topic: String },
    #[error("{topic}: more than {limit} {what} tracked; refusing to grow further")]
    Capacity {
        topic: String,
        what: &'static str,
        limit: usize,
    },
}

impl DecodeError {
    pub(crate) fn field(
        topic: &str,
        pointer: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Field {
            topic: topic.to_owned(),
            pointer: pointer.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn value(topic: &str, pointer: impl Into<String>, source: ValueError) -> Self {
        Self::Value {
            topic: topic.to_owned(),
            pointer: pointer.into(),
            source,
        }
    }

    pub(crate) fn topic(topic: &str, expected: &'static str) -> Self {
        Self::Topic {
            topic: topic.to_owned(),
            expected,
        }
    }

    /// A serde_json error, with its line and column turned back into a byte offset so that it can
    /// be found in a hex dump of the payload.
    pub(crate) fn json(topic: &str, payload: &[u8], err: &serde_json::Error) -> Self {
        let offset = byte_offset(payload, err.line(), err.column());
        // serde_json appends " at line L column C" to its message; the offset replaces it.
        let msg = err.to_string();
        let reason = match msg.rfind(" at line ") {
            Some(i) => msg.get(..i).unwrap_or(&msg).to_owned(),
            None => msg,
        };
        Self::Json {
            topic: topic.to_owned(),
            offset,
            reason,
        }
    }
}

/// serde_json counts lines from 1 and columns from 1 in bytes; column 0 means "before the first
/// byte of the line".
fn byte_offset(payload: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    let mut current = 1;
    if line > 1 {
        for (i, b) in payload.iter().enumerate() {
            if *b == b'\n' {
                current += 1;
                if current == line {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    start
        .saturating_add(column.saturating_sub(1))
        .min(payload.len())
}

/// Appends one RFC 6901 reference token to a JSON pointer, escaping `~` and `/`.
pub(crate) fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// The JSON pointer made of `tokens`.
pub(crate) fn pointer(tokens: &[&str]) -> String {
    let mut p = String::new();
    for t in tokens {
        push_token(&mut p, t);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_carry_byte_offsets() {
        let payload = b"{\"a\":1,\n \"b\": x}";
        let err = serde_json::from_slice::<serde_json::Value>(payload).unwrap_err();
        let DecodeError::Json { offset, reason, .. } = DecodeError::json("t", payload, &err) else {
            panic!("not a JSON error");
        };
        assert_eq!(payload[offset], b'x');
        assert!(!reason.contains("line"), "{reason}");
    }

    #[test]
    fn offsets_stay_inside_the_payload() {
        assert_eq!(byte_offset(b"", 1, 0), 0);
        assert_eq!(byte_offset(b"ab", 7, 9), 2);
        assert_eq!(byte_offset(b"ab\ncd", 2, 2), 4);
    }

    #[test]
    fn pointers_escape_tokens() {
        assert_eq!(
            pointer(&["params", "switch:0", "a/b~c"]),
            "/params/switch:0/a~1b~0c"
        );
    }
}
