//! Form bodies: `application/x-www-form-urlencoded` and `multipart/form-data`.
//!
//! Mailgun posts either, depending on the route. Values are kept as bytes
//! (a MIME message need not be UTF-8); file parts are skipped (attachments
//! arrive inside `body-mime` anyway).

use crate::ParseError;

/// Most fields a form may have; a body with more is refused.
const MAX_FIELDS: usize = 512;

/// Parsed form fields, in order.
#[derive(Debug, Default)]
pub(crate) struct Form {
    fields: Vec<(String, Vec<u8>)>,
}

impl Form {
    /// The first field of that name, as bytes.
    pub(crate) fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first field of that name, as text (lossy).
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.bytes(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Parses `body` according to `content_type`.
    pub(crate) fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Form, ParseError> {
        let content_type = content_type.unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-www-form-urlencoded" => Ok(Form {
                fields: form_urlencoded::parse(body)
                    .take(MAX_FIELDS)
                    .map(|(k, v)| (k.into_owned(), v.into_owned().into_bytes()))
                    .collect(),
            }),
            "multipart/form-data" => {
                let boundary = boundary(content_type)
                    .ok_or_else(|| ParseError::new("multipart/form-data without a boundary"))?;
                multipart(body, &boundary)
            }
            "" => Err(ParseError::new("missing Content-Type")),
            other => Err(ParseError::new(format!(
                "unsupported Content-Type `{other}` (expected a form)"
            ))),
        }
    }
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        (key.trim().eq_ignore_ascii_case("boundary"))
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn multipart(body: &[u8], boundary: &str) -> Result<Form, ParseError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut form = Form::default();
    let mut pos = find(body, delimiter, 0)
        .ok_or_else(|| ParseError::new("multipart body without its boundary"))?
        + delimiter.len();
    loop {
        // After a delimiter: `--` ends the body, else CRLF and a part.
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(form);
        }
        pos += if body.get(pos..pos + 2) == Some(b"\r\n") {
            2
        } else {
            1
        };
        let header_end = find(body, b"\r\n\r\n", pos)
            .ok_or_else(|| ParseError::new("multipart part without a header end"))?;
        let headers = String::from_utf8_lossy(&body[pos..header_end]);
        let content_start = header_end + 4;
        let mut closing = Vec::with_capacity(delimiter.len() + 2);
        closing.extend_from_slice(b"\r\n");
        closing.extend_from_slice(delimiter);
        let content_end = find(body, &closing, content_start)
            .ok_or_else(|| ParseError::new("multipart part is not terminated"))?;
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or_default();
        let is_file = disposition.contains("filename=");
        if let Some(name) = param(disposition, "name")
            && !is_file
        {
            if form.fields.len() >= MAX_FIELDS {
                return Err(ParseError::new("too many form fields"));
            }
            form.fields
                .push((name, body[content_start..content_end].to_vec()));
        }
        pos = content_end + closing.len();
    }
}

/// `name="value"` from a header line.
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded() {
        let form = Form::parse(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"token=abc&body-plain=Hi%20there%0A&x=1",
        )
        .expect("form");
        assert_eq!(form.text("token").as_deref(), Some("abc"));
        assert_eq!(form.text("body-plain").as_deref(), Some("Hi there\n"));
    }

    #[test]
    fn multipart_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nabc\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"attachment-1\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"body-mime\"\r\n\r\nFrom: a@b.c\r\n\r\nhello\r\n--XyZ--\r\n";
        let form = Form::parse(Some("multipart/form-data; boundary=XyZ"), body).expect("form");
        assert_eq!(form.text("token").as_deref(), Some("abc"));
        assert_eq!(
            form.text("body-mime").as_deref(),
            Some("From: a@b.c\r\n\r\nhello")
        );
        assert!(form.bytes("attachment-1").is_none(), "files are skipped");
    }

    #[test]
    fn malformed_forms_are_errors() {
        assert!(Form::parse(Some("application/json"), b"{}").is_err());
        assert!(Form::parse(None, b"a=b").is_err());
        assert!(Form::parse(Some("multipart/form-data"), b"x").is_err());
        assert!(Form::parse(Some("multipart/form-data; boundary=Q"), b"--Q\r\nno end").is_err());
    }
}
