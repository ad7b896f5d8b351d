//! Bencode, the encoding of .torrent files (BEP 3): encode with sorted dictionary keys,
//! decode strictly with limits, since torrents arrive from strangers.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    pub fn str(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }

    pub fn dict<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Value::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    Value::Bytes(k.clone()).encode_into(out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid bencode at byte {offset}: {problem}")]
pub struct DecodeError {
    pub offset: usize,
    pub problem: &'static str,
}

const MAX_DEPTH: usize = 32;

/// A decoded value plus the byte range of the top-level `info` dictionary, whose SHA-1 is
/// the info hash and must be taken over the bytes as they were, not as re-encoded.
#[derive(Debug)]
pub struct Decoded {
    pub value: Value,
    pub info_span: Option<(usize, usize)>,
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut d = Decoder {
        bytes,
        pos: 0,
        info_span: None,
    };
    let value = d.value(0)?;
    if d.pos != bytes.len() {
        return Err(d.err("trailing bytes after the value"));
    }
    Ok(Decoded {
        value,
        info_span: d.info_span,
    })
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    info_span: Option<(usize, usize)>,
}

impl Decoder<'_> {
    fn err(&self, problem: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            problem,
        }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err("unexpected end of data"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let end = self.find(b'e')?;
                let text = &self.bytes[self.pos..end];
                let valid = !text.is_empty()
                    && text != b"-"
                    && text != b"-0"
                    && !(text.len() > 1 && text[0] == b'0')
                    && !(text.len() > 2 && text.starts_with(b"-0"));
                let n = std::str::from_utf8(text)
                    .ok()
                    .filter(|_| valid)
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(|| self.err("malformed integer"))?;
                self.pos = end + 1;
                Ok(Value::Int(n))
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut entries = BTreeMap::new();
                let mut last: Option<Vec<u8>> = None;
                while self.peek()? != b'e' {
                    let key = self.bytes_value()?;
                    if last.as_ref().is_some_and(|l| *l >= key) {
                        return Err(self.err("dictionary keys are not sorted or repeat"));
                    }
                    let start = self.pos;
                    let v = self.value(depth + 1)?;
                    if depth == 0 && key == b"info" {
                        self.info_span = Some((start, self.pos));
                    }
                    last = Some(key.clone());
                    entries.insert(key, v);
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes_value()?)),
            _ => Err(self.err("unexpected byte")),
        }
    }

    fn find(&self, byte: u8) -> Result<usize, DecodeError> {
        self.bytes[self.pos..]
            .iter()
            .position(|&b| b == byte)
            .map(|p| self.pos + p)
            .ok_or_else(|| self.err("unexpected end of data"))
    }

    fn bytes_value(&mut self) -> Result<Vec<u8>, DecodeError> {
        let colon = self.find(b':')?;
        let text = &self.bytes[self.pos..colon];
        if text.is_empty() || (text.len() > 1 && text[0] == b'0') {
            return Err(self.err("malformed string length"));
        }
        let len: usize = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| self.err("malformed string length"))?;
        let start = colon + 1;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err("string runs past the end of data"))?;
        self.pos = end;
        Ok(self.bytes[start..end].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..6),
                    inner,
                    0..5
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(v in arb_value()) {
            let bytes = v.encode();
            prop_assert_eq!(decode(&bytes).unwrap().value, v);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn info_span_covers_the_raw_info_bytes() {
        let raw = b"d8:announce3:abc4:infod4:name1:xee";
        let d = decode(raw).unwrap();
        let (s, e) = d.info_span.unwrap();
        assert_eq!(&raw[s..e], b"d4:name1:xe");
    }

    #[test]
    fn non_canonical_input_is_refused() {
        for bad in [
            &b"i-0e"[..],
            b"i03e",
            b"02:ab",
            b"d1:b0:1:a0:e",
            b"d1:a0:1:a0:e",
            b"l",
            b"4:ab",
            b"i1ei2e",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "l".repeat(100), "e".repeat(100));
        assert_eq!(
            decode(deep.as_bytes()).unwrap_err().problem,
            "nested too deeply"
        );
    }
}
