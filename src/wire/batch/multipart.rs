//! A strict `multipart/form-data` reader (RFC 7578 over RFC 2046's syntax) for uploads that are
//! judged.
//!
//! Multipart parsers disagree at the edges: LF-only line ends, a preamble, padding after a
//! delimiter, `filename*`, a `Content-Transfer-Encoding`, a field sent twice. Where one parser
//! sees a part that another does not, the upstream could store a file the gateway never read, so
//! every such edge is refused here rather than resolved one way. In particular the delimiter
//! `--boundary` may not occur anywhere inside a part: RFC 2046 forbids it, and it is what a
//! lenient parser would split on.

/// One part of a form: a field or a file.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: String,
    /// Present for a file.
    pub filename: Option<String>,
    pub body: &'a [u8],
}

/// The `boundary` of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "expected Content-Type multipart/form-data, not {essence:?}"
        ));
    }
    let mut found = None;
    for p in params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("Content-Type parameter {:?} has no value", p.trim()))?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        if found.is_some() {
            return Err("Content-Type names its boundary twice".into());
        }
        let v = v.trim();
        let v = match v.strip_prefix('"') {
            Some(q) => q
                .strip_suffix('"')
                .ok_or("Content-Type's boundary has an unclosed quote")?,
            None => v,
        };
        found = Some(v.to_string());
    }
    let b = found.ok_or("Content-Type multipart/form-data has no boundary")?;
    // RFC 2046 section 5.1.1: 1 to 70 `bchars`, not ending in a space.
    let bchar = |c: u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c);
    if b.is_empty() || b.len() > 70 || b.ends_with(' ') || !b.bytes().all(bchar) {
        return Err(format!(
            "the multipart boundary {b:?} is not one RFC 2046 allows"
        ));
    }
    Ok(b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The parts of `body`, sent with `content_type`.
pub fn parse<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, String> {
    let dash = format!("--{}", boundary(content_type)?);
    let dash = dash.as_bytes();
    let delimiter = [b"\r\n", dash].concat();
    let mut rest = body
        .strip_prefix(dash)
        .and_then(|r| r.strip_prefix(b"\r\n"))
        .ok_or("the multipart body must begin with its boundary and CRLF (no preamble)")?;
    let mut parts = Vec::new();
    loop {
        let head_end = find(rest, b"\r\n\r\n");
        // A part without headers starts with the blank line itself.
        let (head, after) = match rest.strip_prefix(b"\r\n") {
            Some(a) => (&rest[..0], a),
            None => {
                let end = head_end.ok_or("a multipart part's headers do not end")?;
                (&rest[..end], &rest[end + 4..])
            }
        };
        let end = find(after, &delimiter).ok_or("the multipart body does not close")?;
        let content = &after[..end];
        if find(content, dash).is_some() {
            return Err("a multipart part contains its boundary".into());
        }
        parts.push(part(head, content)?);
        rest = &after[end + delimiter.len()..];
        if let Some(epilogue) = rest.strip_prefix(b"--") {
            if !epilogue.is_empty() && epilogue != b"\r\n" {
                return Err("the multipart body goes on after its closing boundary".into());
            }
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a multipart boundary is followed by something other than CRLF")?;
    }
}

/// A part from its header block and content.
fn part<'a>(head: &[u8], body: &'a [u8]) -> Result<Part<'a>, String> {
    let head = std::str::from_utf8(head).map_err(|_| "a multipart part's headers are not UTF-8")?;
    let mut disposition = None;
    for line in head
        .split("\r\n")
        .filter(|l| !head.is_empty() || !l.is_empty())
    {
        let (name, value) = line
            .split_once(':')
            .filter(|(n, _)| !n.is_empty() && !n.starts_with([' ', '\t']))
            .ok_or_else(|| format!("the multipart header line {line:?} is not a header"))?;
        match name.to_ascii_lowercase().as_str() {
            "content-disposition" if disposition.is_none() => disposition = Some(value.trim()),
            "content-type" => {}
            _ => {
                return Err(format!(
                    "the multipart header {name:?} is not one guardgate reads (only Content-Disposition and Content-Type, once each)"
                ))
            }
        }
    }
    let d = disposition.ok_or("a multipart part has no Content-Disposition")?;
    let (name, filename) = disposition_params(d)?;
    Ok(Part {
        name,
        filename,
        body,
    })
}

/// `form-data; name="..."[; filename="..."]`: the name and the file name.
fn disposition_params(d: &str) -> Result<(String, Option<String>), String> {
    let mut params = d.split(';');
    if !params
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("form-data"))
    {
        return Err(format!("Content-Disposition {d:?} is not form-data"));
    }
    let (mut name, mut filename) = (None, None);
    for p in params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("Content-Disposition parameter {:?} has no value", p.trim()))?;
        let v = v.trim();
        // Quoted without escapes (browsers percent-encode quotes in names), or a bare token.
        let v = match v.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
            Some(q) if !q.contains(['"', '\\']) => q,
            None if !v.is_empty() && !v.contains(['"', '\\', ' ']) => v,
            _ => {
                return Err(format!(
                    "Content-Disposition value {v:?} is not plainly quoted"
                ))
            }
        };
        let slot = match k.trim().to_ascii_lowercase().as_str() {
            "name" => &mut name,
            "filename" => &mut filename,
            other => {
                return Err(format!(
                    "Content-Disposition parameter {other:?} is not one guardgate reads (name, filename)"
                ))
            }
        };
        if slot.replace(v.to_string()).is_some() {
            return Err(format!("Content-Disposition {d:?} repeats a parameter"));
        }
    }
    let name = name.ok_or_else(|| format!("Content-Disposition {d:?} has no name"))?;
    Ok((name, filename))
}

#[cfg(test)]
mod tests {
    use super::parse;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn form(parts: &[(&str, Option<&str>, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, file, body) in parts {
            b.extend(b"--XyZ\r\n");
            match file {
                Some(f) => b.extend(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/jsonl\r\n\r\n").bytes(),
                ),
                None => b.extend(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").bytes(),
                ),
            }
            b.extend(body.bytes());
            b.extend(b"\r\n");
        }
        b.extend(b"--XyZ--\r\n");
        b
    }

    #[test]
    fn a_well_formed_upload_is_read() {
        let body = form(&[
            ("purpose", None, "batch"),
            ("file", Some("in.jsonl"), "{\"a\":1}\n{\"b\":2}\n"),
        ]);
        let parts = parse(CT, &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "purpose");
        assert_eq!(parts[0].body, b"batch");
        assert_eq!(parts[1].filename.as_deref(), Some("in.jsonl"));
        assert_eq!(parts[1].body, b"{\"a\":1}\n{\"b\":2}\n");
        let quoted = "multipart/form-data; boundary=\"XyZ\"";
        assert_eq!(parse(quoted, &body).unwrap().len(), 2);
    }

    #[test]
    fn the_edges_parsers_disagree_on_are_refused() {
        let good = form(&[("purpose", None, "batch")]);
        let s = String::from_utf8(good.clone()).unwrap();
        let cases: Vec<(String, Vec<u8>)> = vec![
            ("multipart/mixed; boundary=XyZ".into(), good.clone()),
            ("multipart/form-data".into(), good.clone()),
            (
                "multipart/form-data; boundary=XyZ; boundary=Q".into(),
                good.clone(),
            ),
            (CT.into(), [b"preamble\r\n".as_slice(), &good].concat()),
            (CT.into(), s.replace("\r\n", "\n").into_bytes()),
            (
                CT.into(),
                s.replace("--XyZ\r\nC", "--XyZ \r\nC").into_bytes(),
            ),
            (
                CT.into(),
                s.replace("--XyZ--\r\n", "--XyZ--\r\nmore").into_bytes(),
            ),
            (CT.into(), s.replace("--XyZ--\r\n", "").into_bytes()),
            (
                CT.into(),
                s.replace("name=\"purpose\"", "name*=UTF-8''purpose")
                    .into_bytes(),
            ),
            (
                CT.into(),
                s.replace("name=\"purpose\"", "name=\"purpose\"; name=\"file\"")
                    .into_bytes(),
            ),
            (
                CT.into(),
                s.replace("name=\"purpose\"", "name=\"pur\\\"pose\"")
                    .into_bytes(),
            ),
            (
                CT.into(),
                s.replace("\r\n\r\n", "\r\nContent-Transfer-Encoding: base64\r\n\r\n")
                    .into_bytes(),
            ),
            (CT.into(), s.replace("batch", "bat\n--XyZch").into_bytes()),
            (
                CT.into(),
                s.replace("form-data;", "attachment;").into_bytes(),
            ),
        ];
        for (ct, body) in cases {
            assert!(
                parse(&ct, &body).is_err(),
                "{ct} {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
