//! The update record that `tw.encode_update` writes into a payload's metadata, under
//! [`UPDATE_KEY`] (docs/FORMAT.md, "Federated update records"), read without parsing
//! the rest of the metadata and checked field by field: it comes from the client.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::format::parse_hex32;

/// The metadata key of the update record.
pub const UPDATE_KEY: &str = "tensorwire.update";
/// Longest update record accepted, in bytes of JSON.
pub const MAX_RECORD_LEN: usize = 64 << 10;
/// Longest client id accepted, in bytes.
pub const MAX_CLIENT_LEN: usize = 1024;

/// A checked update record.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRecord {
    /// `Some(base id)` for a difference, `None` for a model.
    pub difference: Option<[u8; 32]>,
    /// The base the update was made against (for a difference, the same id).
    pub base: Option<[u8; 32]>,
    /// The round it was made for.
    pub round: Option<i64>,
    /// The client's id.
    pub client: Option<String>,
    /// The client's sample count: finite, positive, at most [`super::MAX_WEIGHT`].
    pub samples: Option<f64>,
}

/// The raw records of a metadata object — the update record ([`UPDATE_KEY`]) and the
/// partial aggregate's ([`super::partial::PARTIAL_KEY`]) — when it has them; other keys
/// are skipped unparsed.
#[derive(Default)]
pub(super) struct Records<'a> {
    pub update: Option<&'a RawValue>,
    pub partial: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Records<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Find;
        impl<'de> Visitor<'de> for Find {
            type Value = Records<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found = Records::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        UPDATE_KEY => &mut found.update,
                        super::partial::PARTIAL_KEY => &mut found.partial,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_none() {
                        *slot = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(found)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Records::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Records::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Records::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Records::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Records::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Records::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Records::default())
            }
        }
        d.deserialize_any(Find)
    }
}

impl<'a> Records<'a> {
    /// The records of `metadata` (the payload's metadata JSON, already validated).
    pub(super) fn of(metadata: &'a str) -> Result<Records<'a>, String> {
        serde_json::from_str(metadata).map_err(|e| format!("its metadata is not readable: {e}"))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl UpdateRecord {
    /// The record in `metadata` (the payload's metadata JSON, already validated as
    /// JSON): `Ok(None)` when it has none, `Err(reason)` when the record is malformed.
    /// A payload holding a partial aggregate is refused here: it is not an update.
    pub fn from_metadata(metadata: &str) -> Result<Option<UpdateRecord>, String> {
        let found = Records::of(metadata)?;
        if found.partial.is_some() {
            return Err(format!(
                "it is a partial aggregate (its metadata has a {:?} record), not an update: \
                 merge it with Aggregator.merge()",
                super::partial::PARTIAL_KEY
            ));
        }
        let Some(raw) = found.update else {
            return Ok(None);
        };
        if raw.get().len() > MAX_RECORD_LEN {
            return Err(format!(
                "its update record is {} bytes of JSON, more than {MAX_RECORD_LEN}",
                raw.get().len()
            ));
        }
        let bad = |field: &str, want: &str, got: &Value| {
            format!(
                "its update record's {field:?} must be {want}, got {}",
                type_name(got)
            )
        };
        let Value::Object(rec) = serde_json::from_str::<Value>(raw.get())
            .map_err(|e| format!("its update record is not readable: {e}"))?
        else {
            return Err("its update record is not a JSON object".into());
        };
        let field = |k: &str| rec.get(k).filter(|v| !v.is_null());
        let base = match field("base") {
            None => None,
            Some(Value::String(s)) => Some(parse_hex32(s).ok_or_else(|| {
                format!("its update record's \"base\" is not 64 lowercase hex digits: {s:?}")
            })?),
            Some(v) => return Err(bad("base", "a base id string", v)),
        };
        let difference = match field("kind") {
            None => None,
            Some(Value::String(k)) if k == "model" => None,
            Some(Value::String(k)) if k == "difference" => {
                Some(base.ok_or("its update record says it is a difference but names no base")?)
            }
            Some(Value::String(k)) => {
                return Err(format!(
                    "its update record's \"kind\" must be \"difference\" or \"model\", got {k:?}"
                ))
            }
            Some(v) => return Err(bad("kind", "a string", v)),
        };
        let round = match field("round") {
            None => None,
            Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
            Some(v) => return Err(bad("round", "an integer", v)),
        };
        let client = match field("client") {
            None => None,
            Some(Value::String(s)) if s.len() <= MAX_CLIENT_LEN => Some(s.clone()),
            Some(Value::String(s)) => {
                return Err(format!(
                    "its update record's client id is {} bytes long, more than {MAX_CLIENT_LEN}",
                    s.len()
                ))
            }
            Some(v) => return Err(bad("client", "a string", v)),
        };
        let samples = match field("samples") {
            None => None,
            Some(Value::Number(n)) => {
                let s = n.as_f64().unwrap_or(f64::NAN);
                super::check_weight(s)
                    .map_err(|why| format!("its update record's sample count {why}"))?;
                if s == 0.0 {
                    return Err("its update record's sample count is 0".into());
                }
                Some(s)
            }
            Some(v) => return Err(bad("samples", "a number", v)),
        };
        Ok(Some(UpdateRecord {
            difference,
            base,
            round,
            client,
            samples,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Result<Option<UpdateRecord>, String> {
        UpdateRecord::from_metadata(json)
    }

    #[test]
    fn records_are_read_and_checked() {
        let id = "ab".repeat(32);
        let r = rec(&format!(
            r#"{{"x": [[[1]]], "tensorwire.update": {{"kind": "difference", "base": "{id}",
                "round": 3, "client": "c7", "samples": 120}}}}"#
        ))
        .unwrap()
        .unwrap();
        assert_eq!(r.difference, Some([0xab; 32]));
        assert_eq!(
            (r.round, r.client.as_deref(), r.samples),
            (Some(3), Some("c7"), Some(120.0))
        );
        assert_eq!(rec(r#"{"other": 1}"#), Ok(None));
        assert_eq!(rec("[1, 2]"), Ok(None));
        assert_eq!(rec("7"), Ok(None));
        let model = rec(r#"{"tensorwire.update": {"samples": null}}"#)
            .unwrap()
            .unwrap();
        assert_eq!((model.difference, model.samples), (None, None));
    }

    #[test]
    fn hostile_fields_are_reasons_not_crashes() {
        for (json, why) in [
            (
                r#"{"tensorwire.update": {"samples": 1e39}}"#,
                "sample count",
            ),
            (
                r#"{"tensorwire.update": {"samples": 1e308}}"#,
                "sample count",
            ),
            (r#"{"tensorwire.update": {"samples": -1}}"#, "sample count"),
            (r#"{"tensorwire.update": {"samples": 0}}"#, "is 0"),
            (
                r#"{"tensorwire.update": {"samples": "abc"}}"#,
                "got a string",
            ),
            (r#"{"tensorwire.update": {"samples": [1]}}"#, "got a list"),
            (
                r#"{"tensorwire.update": {"samples": {"a": 1}}}"#,
                "got an object",
            ),
            (
                r#"{"tensorwire.update": {"samples": true}}"#,
                "got a boolean",
            ),
            (r#"{"tensorwire.update": {"base": 5}}"#, "got a number"),
            (r#"{"tensorwire.update": {"base": [1]}}"#, "got a list"),
            (r#"{"tensorwire.update": {"base": "xyz"}}"#, "hex"),
            (
                r#"{"tensorwire.update": {"kind": "difference"}}"#,
                "names no base",
            ),
            (r#"{"tensorwire.update": {"kind": "gift"}}"#, "\"kind\""),
            (r#"{"tensorwire.update": {"round": 1.5}}"#, "an integer"),
            (r#"{"tensorwire.update": {"round": "1"}}"#, "an integer"),
            (r#"{"tensorwire.update": [1]}"#, "not a JSON object"),
        ] {
            let err = rec(json).unwrap_err();
            assert!(err.contains(why), "{json}: {err}");
        }
        let long = format!(
            r#"{{"tensorwire.update": {{"client": "{}"}}}}"#,
            "x".repeat(2000)
        );
        assert!(rec(&long).unwrap_err().contains("client id"));
        let big = format!(
            r#"{{"tensorwire.update": {{"pad": "{}"}}}}"#,
            "x".repeat(70_000)
        );
        assert!(rec(&big).unwrap_err().contains("bytes of JSON"));
    }
}
