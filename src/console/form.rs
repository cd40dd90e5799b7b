//! HTML form bodies (`application/x-www-form-urlencoded`): read with a size
//! cap, decoded into fields. The parser is pure; what a field must hold is
//! decided by the domain's own parsers (`Credit::parse`, `NewRoute`, …).

use rouille::Request;

use super::error::ConsoleError;
use crate::http::extract::{bounded_body, BodyError};

/// Console forms are a few short fields; anything bigger is refused.
const MAX_BODY_BYTES: u64 = 16 * 1024;

/// A decoded form: its fields in order (a name may repeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value trimmed, or `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// A checkbox: present means ticked.
    pub fn ticked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Decodes `a=1&b=x+y%21`: `+` is a space, `%XX` a byte, invalid UTF-8 is
/// replaced rather than refused (a field with it is then refused by its own
/// parser).
pub fn parse(body: &str) -> Form {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        rouille::percent_encoding::percent_decode(s.as_bytes())
            .decode_utf8_lossy()
            .into_owned()
    };
    Form(
        body.split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            })
            .collect(),
    )
}

/// The request's form body, at most 16 KiB.
pub fn read(req: &Request) -> Result<Form, ConsoleError> {
    let content_type = req.header("Content-Type").unwrap_or("");
    if !content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(ConsoleError::BadInput(
            "send the form as application/x-www-form-urlencoded".into(),
        ));
    }
    let bytes = bounded_body(req, MAX_BODY_BYTES).map_err(|e| match e {
        BodyError::Unreadable => ConsoleError::BadInput("the form could not be read".into()),
        BodyError::TooLarge => ConsoleError::BadInput("the form is over 16 KiB".into()),
    })?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_percent_and_plus_decoded() {
        let f = parse("csrf=ab&amount=50&note=a+b%21&empty=&flag");
        assert_eq!(f.get("csrf"), Some("ab"));
        assert_eq!(f.get("note"), Some("a b!"));
        assert_eq!(f.get("empty"), Some(""));
        assert_eq!(f.text("empty"), None);
        assert!(f.ticked("flag"));
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn the_first_of_repeated_fields_wins() {
        assert_eq!(parse("a=1&a=2").get("a"), Some("1"));
    }

    #[test]
    fn an_encoded_ampersand_or_equals_stays_inside_its_value() {
        let f = parse("token=a%26b%3Dc");
        assert_eq!(f.get("token"), Some("a&b=c"));
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        assert_eq!(parse("a=%FF").get("a"), Some("\u{fffd}"));
    }
}
