//! Standard base64 (RFC 4648 §4: `A-Z a-z 0-9 + /`, `=` padding), for values that are not
//! UTF-8 in the JSON API (`expected_base64`, `new_base64`, `current_base64` of
//! `POST /v1/cas/{key}`). Decoding is strict: the length is a multiple of 4, padding appears
//! only at the end, no whitespace, and the unused bits of the last symbol are zero, so each
//! byte string has exactly one accepted text.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Text that is not strict standard base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidBase64;

impl std::fmt::Display for InvalidBase64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not strict standard base64 (RFC 4648 §4, padded)")
    }
}

impl std::error::Error for InvalidBase64 {}

/// The length of [`encode`]'s result for `length` bytes.
pub const fn encoded_len(length: usize) -> usize {
    length.div_ceil(3) * 4
}

/// `bytes` in padded standard base64.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(encoded_len(bytes.len()));
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |word, (at, byte)| word | u32::from(*byte) << (16 - 8 * at));
        for position in 0..4 {
            if position <= chunk.len() {
                let symbol = (word >> (18 - 6 * position)) & 0x3f;
                text.push(char::from(ALPHABET[symbol as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// The bytes that `text` encodes.
pub fn decode(text: &str) -> Result<Vec<u8>, InvalidBase64> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return Err(InvalidBase64);
    }
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    let last_chunk = text.len() / 4;
    for (number, chunk) in text.chunks(4).enumerate() {
        let padding = chunk.iter().rev().take_while(|symbol| **symbol == b'=').count();
        if padding > 2 || (padding > 0 && number + 1 != last_chunk) {
            return Err(InvalidBase64);
        }
        let mut word = 0u32;
        for symbol in &chunk[..4 - padding] {
            word = word << 6 | u32::from(value_of(*symbol)?);
        }
        word <<= 6 * padding as u32;
        let produced = 3 - padding;
        // The bits below the last byte produced must be zero (one text per byte string).
        if word & ((1 << (8 * (3 - produced))) - 1) != 0 {
            return Err(InvalidBase64);
        }
        bytes.extend_from_slice(&word.to_be_bytes()[1..1 + produced]);
    }
    Ok(bytes)
}

fn value_of(symbol: u8) -> Result<u8, InvalidBase64> {
    match symbol {
        b'A'..=b'Z' => Ok(symbol - b'A'),
        b'a'..=b'z' => Ok(symbol - b'a' + 26),
        b'0'..=b'9' => Ok(symbol - b'0' + 52),
        b'+' => Ok(62),
        b'/' => Ok(63),
        _ => Err(InvalidBase64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded), Ok(plain.as_bytes().to_vec()));
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let bytes: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        for length in 0..bytes.len() {
            let text = encode(&bytes[..length]);
            assert_eq!(text.len(), encoded_len(length));
            assert_eq!(decode(&text), Ok(bytes[..length].to_vec()));
        }
        assert_eq!(encode(&[0xff, 0xfe]), "//4=");
        assert_eq!(encode(&[0xfb, 0xef]), "++8=");
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "Zg", "Zg=", "Zg===", "Z===", "====", "Zh==", "Zm9=", "Zg==Zg==", "Zm 9v", "Zm9v\n",
            "Zm-v", "Zm_v", "Zm9é",
        ] {
            assert_eq!(decode(text), Err(InvalidBase64), "{text:?}");
        }
    }
}
