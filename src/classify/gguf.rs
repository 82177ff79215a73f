//! Just enough of the GGUF header to check a model file before handing it to mistral.rs, which
//! panics (rather than erring) on an architecture it does not know, and silently turns a missing
//! path into a Hugging Face download.

use std::io::{BufReader, Read};
use std::path::Path;

/// GGUF architectures mistral.rs 0.8.1 loads (`mistralrs-core/src/gguf/mod.rs`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "llama",
    "phi2",
    "phi3",
    "starcoder2",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "mistral3",
];

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> Result<String, String> {
    let len = read_u64(r).map_err(|e| e.to_string())?;
    if len > 1 << 20 {
        return Err(format!("implausible string length {len}"));
    }
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b).map_err(|e| e.to_string())?;
    String::from_utf8(b).map_err(|_| "a key is not UTF-8".to_string())
}

/// Size in bytes of a fixed-size GGUF value type, `None` for string (8) and array (9).
fn scalar_size(ty: u32) -> Result<Option<u64>, String> {
    Ok(match ty {
        0 | 1 | 7 => Some(1), // u8, i8, bool
        2 | 3 => Some(2),     // u16, i16
        4..=6 => Some(4),     // u32, i32, f32
        10..=12 => Some(8),   // u64, i64, f64
        8 | 9 => None,        // string, array
        t => return Err(format!("unknown GGUF value type {t}")),
    })
}

fn skip_value(r: &mut impl Read, ty: u32) -> Result<(), String> {
    match scalar_size(ty)? {
        Some(n) => {
            std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| e.to_string())?;
        }
        None if ty == 8 => {
            read_string(r)?;
        }
        None => {
            let inner = read_u32(r).map_err(|e| e.to_string())?;
            let count = read_u64(r).map_err(|e| e.to_string())?;
            match scalar_size(inner)? {
                Some(n) => {
                    let bytes = n.checked_mul(count).ok_or("array too large")?;
                    let copied = std::io::copy(&mut r.take(bytes), &mut std::io::sink())
                        .map_err(|e| e.to_string())?;
                    if copied != bytes {
                        return Err("file ends inside an array".into());
                    }
                }
                None => {
                    for _ in 0..count {
                        skip_value(r, inner)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The `general.architecture` of a GGUF file.
pub fn architecture(path: &Path) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = BufReader::new(f);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .map_err(|_| format!("{}: too short to be a GGUF file", path.display()))?;
    if &magic != b"GGUF" {
        return Err(format!("{}: not a GGUF file (bad magic)", path.display()));
    }
    let version = read_u32(&mut r).map_err(|e| e.to_string())?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "{}: unsupported GGUF version {version}",
            path.display()
        ));
    }
    let _tensors = read_u64(&mut r).map_err(|e| e.to_string())?;
    let kvs = read_u64(&mut r).map_err(|e| e.to_string())?;
    for _ in 0..kvs {
        let key = read_string(&mut r).map_err(|e| format!("{}: {e}", path.display()))?;
        let ty = read_u32(&mut r).map_err(|e| e.to_string())?;
        if key == "general.architecture" && ty == 8 {
            return read_string(&mut r).map_err(|e| format!("{}: {e}", path.display()));
        }
        skip_value(&mut r, ty).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Err(format!("{}: no general.architecture key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn finds_the_architecture_after_other_keys() {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend(3u64.to_le_bytes());
        f.extend(string("general.alignment"));
        f.extend(4u32.to_le_bytes());
        f.extend(32u32.to_le_bytes());
        f.extend(string("tokenizer.ggml.tokens"));
        f.extend(9u32.to_le_bytes());
        f.extend(8u32.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        f.extend(string("a"));
        f.extend(string("b"));
        f.extend(string("general.architecture"));
        f.extend(8u32.to_le_bytes());
        f.extend(string("llama"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, &f).unwrap();
        assert_eq!(architecture(&p).unwrap(), "llama");
        std::fs::write(&p, b"PK\x03\x04 not a model").unwrap();
        assert!(architecture(&p).unwrap_err().contains("not a GGUF"));
        std::fs::write(&p, &f[..40]).unwrap();
        assert!(architecture(&p).is_err());
    }
}
