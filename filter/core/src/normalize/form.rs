//! `application/x-www-form-urlencoded` bodies as the policy's `args`: a server reads a form's
//! fields as its parameters (Stripe's `amount=2000`, an OAuth token request's `grant_type`), so
//! a rule on `args.amount` must read them too, not only a JSON body's members.
//!
//! Fields are split on `&` (empty ones skipped) and at their first `=`; `+` is a space and
//! percent-escapes are decoded (a malformed one is kept as written, as every parser does). Each
//! field is an argument with a string value; a name ending in `[]` collects its values into an
//! array under the name as written (`tags[]`). What parsers read differently is refused rather
//! than guessed:
//! - a field that appears more than once with different values (PHP reads the last, Flask the
//!   first, Express both), unless its name ends in `[]`;
//! - a raw `;` (older parsers split fields on it too).
//!
//! Decoded bytes that are not UTF-8 (`caf%E9` under a Latin-1 label) are read with U+FFFD in
//! their place: a byte of 0x80 or more is no ASCII character in any charset the filter accepts
//! (`charset.rs`), so no reading of it spells a word a rule compares. Repeated fields are compared
//! byte for byte, before that replacement.

use serde_json::{Map, Value};

/// Why a form body cannot be read one way only.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FormError {
    /// The field appears more than once with different values.
    Repeated(String),
    /// A raw `;` in the body.
    Semicolon,
}

impl FormError {
    /// The refusal's wording.
    pub(crate) fn reason(&self) -> String {
        match self {
            FormError::Repeated(name) => format!(
                "form field `{}` appears more than once with different values: servers differ on \
                 which one they read",
                super::printable(name)
            ),
            FormError::Semicolon => {
                "a raw `;` in a form body: some servers split fields on it".to_owned()
            }
        }
    }
}

/// The fields of a form body, as a JSON object of strings (arrays for `[]` names).
pub(crate) fn parse(body: &[u8]) -> Result<Value, FormError> {
    if body.contains(&b';') {
        return Err(FormError::Semicolon);
    }
    let mut fields = Fields::default();
    for field in body.split(|&b| b == b'&').filter(|f| !f.is_empty()) {
        let (name, value) = match field.iter().position(|&b| b == b'=') {
            Some(eq) => (
                field.get(..eq).unwrap_or_default(),
                field.get(eq.saturating_add(1)..).unwrap_or_default(),
            ),
            None => (field, &[][..]),
        };
        fields
            .add(
                super::percent_decode(name, true),
                &super::percent_decode(value, true),
            )
            .map_err(FormError::Repeated)?;
    }
    Ok(fields.into_value())
}

/// Form fields as the policy reads them, for urlencoded and multipart bodies alike: each value a
/// string (U+FFFD for bytes that are not UTF-8), a name ending in `[]` collecting its values into
/// an array, and any other name allowed twice only with the same bytes.
#[derive(Default)]
pub(crate) struct Fields {
    values: Map<String, Value>,
    /// Each plain field's name and value bytes, by the name the policy reads.
    raw: std::collections::HashMap<String, (Vec<u8>, Vec<u8>)>,
}

impl Fields {
    /// Add one field; the name as the policy reads it when it repeats a plain field's name with
    /// other bytes (servers differ on which one they read).
    pub(crate) fn add(&mut self, raw_name: Vec<u8>, raw_value: &[u8]) -> Result<(), String> {
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let value = Value::String(String::from_utf8_lossy(raw_value).into_owned());
        if name.ends_with("[]") {
            // Every value under such a name is an array: inserted as one, only ever pushed to.
            if let Value::Array(values) = self
                .values
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                values.push(value);
            }
            return Ok(());
        }
        match self.raw.get(&name) {
            Some((n, v)) if *n != raw_name || v.as_slice() != raw_value => Err(name),
            Some(_) => Ok(()),
            None => {
                self.raw
                    .insert(name.clone(), (raw_name, raw_value.to_vec()));
                self.values.insert(name, value);
                Ok(())
            }
        }
    }

    /// The fields as one JSON object.
    pub(crate) fn into_value(self) -> Value {
        Value::Object(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_arguments() {
        assert_eq!(
            parse(b"amount=2000&currency=usd&note=a+b%2Bc&empty=&flag").unwrap(),
            json!({"amount": "2000", "currency": "usd", "note": "a b+c", "empty": "", "flag": ""})
        );
        assert_eq!(
            parse(b"tags[]=a&tags[]=b&x=1&x=1&&").unwrap(),
            json!({"tags[]": ["a", "b"], "x": "1"})
        );
        assert_eq!(parse(b"").unwrap(), json!({}));
        assert_eq!(
            parse(b"k=100%&p=%zz").unwrap(),
            json!({"k": "100%", "p": "%zz"})
        );
        assert_eq!(
            parse(b"caf%C3%A9=%E2%9C%93").unwrap(),
            json!({"caf\u{e9}": "\u{2713}"})
        );
        assert_eq!(parse(b"q=caf%E9").unwrap(), json!({"q": "caf\u{fffd}"}));
    }

    #[test]
    fn what_parsers_read_differently_is_refused() {
        assert_eq!(
            parse(b"amount=1&amount=100000"),
            Err(FormError::Repeated("amount".into()))
        );
        assert_eq!(
            parse(b"amount=1&am%6Funt=100000"),
            Err(FormError::Repeated("amount".into())),
            "an escaped name is the same name"
        );
        assert_eq!(parse(b"amount=1;amount=2"), Err(FormError::Semicolon));
        assert_eq!(
            parse(b"role=adm%E9n&role=adm%E8n"),
            Err(FormError::Repeated("role".into())),
            "compared before U+FFFD replaces what is not UTF-8"
        );
        assert_eq!(
            parse(b"r%E9=1&r%E8=2"),
            Err(FormError::Repeated("r\u{fffd}".into()))
        );
    }
}
