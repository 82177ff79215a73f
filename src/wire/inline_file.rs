//! Files sent inline (base64 or data URLs) whose media type is text.
//!
//! A text file is text the model reads, however it is encoded on the wire, so it is decoded and
//! judged like any message. Other media (images, PDFs, audio) are not text: they stay parts no
//! classifier read. The decoded text is never larger than the body it came in, so the body
//! limits bound it.

/// What an inline file holds for the classifier.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Inline {
    /// A text file, decoded.
    Text(String),
    /// Not a text media type: nothing a text classifier reads.
    NotText,
    /// Said to be text but not decodable: refused, since a lenient upstream may read what this
    /// cannot.
    Undecodable,
}

/// A file given as `data` (a data URL, or bare base64) with an optional media type and file
/// name: the media type is the data URL's, else `media_type`, else the one the name's extension
/// implies.
pub(super) fn read(data: &str, media_type: Option<&str>, filename: Option<&str>) -> Inline {
    let (url_type, payload, is_base64) = match data_url(data) {
        Some(parts) => parts,
        None => (None, data, true),
    };
    let text = url_type
        .or(media_type)
        .map(is_text_media)
        .or_else(|| filename.map(is_text_name))
        .unwrap_or(false);
    if !text {
        return Inline::NotText;
    }
    let bytes = if is_base64 {
        base64(payload)
    } else {
        percent_decoded(payload)
    };
    match bytes {
        Some(b) => Inline::Text(text_of(&b)),
        None => Inline::Undecodable,
    }
}

/// `data:[<media type>][;params][;base64],<payload>`: the media type (when given), the payload
/// and whether it is base64.
fn data_url(s: &str) -> Option<(Option<&str>, &str, bool)> {
    let rest = s
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("data:"))
        .map(|_| &s[5..])?;
    let (meta, payload) = rest.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next().map(str::trim).filter(|m| !m.is_empty());
    let is_base64 = params.any(|p| p.trim().eq_ignore_ascii_case("base64"));
    Some((media_type, payload, is_base64))
}

/// Media types whose content is text: `text/*`, structured text (`+json`, `+xml`, `+yaml`)
/// and the `application/` types of text formats and source code.
pub(super) fn is_text_media(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    top == "text"
        || ["+json", "+xml", "+yaml"].iter().any(|s| sub.ends_with(s))
        || (top == "application" && TEXT_APPLICATION_TYPES.contains(&sub))
}

const TEXT_APPLICATION_TYPES: &[&str] = &[
    "json",
    "x-ndjson",
    "jsonl",
    "x-jsonlines",
    "xml",
    "yaml",
    "x-yaml",
    "toml",
    "javascript",
    "x-javascript",
    "ecmascript",
    "typescript",
    "x-typescript",
    "sql",
    "x-sh",
    "x-shellscript",
    "x-python",
    "x-python-code",
    "x-httpd-php",
    "x-perl",
    "x-ruby",
    "x-tex",
    "x-latex",
    "rtf",
    "csv",
    "markdown",
    "x-markdown",
    "graphql",
    "x-subrip",
    "xhtml",
];

/// File name extensions of text files, for files sent without a media type.
fn is_text_name(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    ext.is_some_and(|e| TEXT_EXTENSIONS.contains(&e.as_str()))
}

const TEXT_EXTENSIONS: &[&str] = &[
    "txt", "text", "md", "markdown", "json", "jsonl", "ndjson", "csv", "tsv", "xml", "html", "htm",
    "yaml", "yml", "toml", "ini", "cfg", "conf", "log", "py", "js", "mjs", "ts", "tsx", "jsx",
    "java", "c", "h", "cc", "cpp", "hpp", "cs", "go", "rs", "rb", "php", "pl", "sh", "bash", "sql",
    "css", "tex", "rtf", "srt", "vtt", "kt", "swift", "scala", "r", "lua",
];

/// Base64 as lenient decoders read it: standard or URL-safe alphabet, padding optional, ASCII
/// whitespace (MIME line breaks) ignored. `None` for anything else.
fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut padding = false;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                padding = true;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        if padding {
            // Data after padding.
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // A single leftover sextet cannot be a byte.
    (bits < 6).then_some(out)
}

/// `%XX` escapes undone (a data URL without `;base64`).
fn percent_decoded(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Bytes as text: UTF-8, UTF-16 with a byte order mark, or (another 8-bit charset) UTF-8 read
/// lossily, which keeps every ASCII word.
fn text_of(bytes: &[u8]) -> String {
    let utf16 = |le: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(true),
        [0xFE, 0xFF, ..] => utf16(false),
        _ => String::from_utf8_lossy(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
            .into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPE_BOMB_B64: &str = "cGlwZSBib21i";

    #[test]
    fn text_media_types() {
        for t in [
            "text/plain",
            "TEXT/Markdown; charset=utf-8",
            "application/json",
            "application/ld+json",
            "application/x-yaml",
            "image/svg+xml",
        ] {
            assert!(is_text_media(t), "{t}");
        }
        for t in ["application/pdf", "image/png", "audio/wav", "text", ""] {
            assert!(!is_text_media(t), "{t}");
        }
    }

    #[test]
    fn data_urls_and_bare_base64() {
        let text = |s: &str| Inline::Text(s.to_string());
        assert_eq!(
            read(
                &format!("data:text/plain;base64,{PIPE_BOMB_B64}"),
                None,
                None
            ),
            text("pipe bomb")
        );
        assert_eq!(
            read("data:text/plain,pipe%20bomb", None, None),
            text("pipe bomb")
        );
        assert_eq!(
            read(PIPE_BOMB_B64, Some("text/markdown"), None),
            text("pipe bomb")
        );
        assert_eq!(
            read(PIPE_BOMB_B64, None, Some("notes.TXT")),
            text("pipe bomb")
        );
        assert_eq!(read(PIPE_BOMB_B64, None, Some("a.pdf")), Inline::NotText);
        assert_eq!(
            read(
                &format!("data:application/pdf;base64,{PIPE_BOMB_B64}"),
                Some("text/plain"),
                None
            ),
            Inline::NotText
        );
        assert_eq!(read(PIPE_BOMB_B64, None, None), Inline::NotText);
    }

    #[test]
    fn lenient_base64_is_read_and_garbage_refused() {
        // Padding, line breaks, the URL-safe alphabet.
        assert_eq!(base64("cGlw\r\nZSBi b21i").unwrap(), b"pipe bomb");
        assert_eq!(base64("cGlwZQ==").unwrap(), b"pipe");
        assert_eq!(base64("cGlwZQ").unwrap(), b"pipe");
        assert_eq!(base64("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(base64("cGl*ZQ"), None);
        assert_eq!(base64("cGlwZQ==ZQ"), None);
        assert_eq!(base64("c"), None);
        assert_eq!(
            read("data:text/plain;base64,%%%", None, None),
            Inline::Undecodable
        );
    }

    #[test]
    fn charsets() {
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("pipe bomb".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(text_of(&utf16le), "pipe bomb");
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("zorble".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(text_of(&utf16be), "zorble");
        assert_eq!(text_of(b"\xEF\xBB\xBFpipe bomb"), "pipe bomb");
        assert_eq!(
            text_of(b"pipe bomb \xe9t\xe9"),
            "pipe bomb \u{FFFD}t\u{FFFD}"
        );
    }
}
