//! The tables of the fabric file and the keys each accepts, read from the parser's own structs.
//!
//! Every `Raw*` struct is `#[serde(deny_unknown_fields)]`: its derived `Deserialize` hands serde
//! the list of its fields, and serde words the "unknown field `x`, expected one of ..." errors
//! from that same list. [`tables`] reads the lists back, so what the documentation promises
//! (docs/configuration.md; a test compares) is exactly what the parser accepts.
use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{
    security_groups::{RawRule, RawSecurityGroup},
    RawChpid, RawFabric, RawFile, RawLpar, RawNic,
};

/// Every table of the fabric file by its TOML path (`""` for the top level, `"lpar.nic"` for a
/// NIC, `"security_group.rules"` for a rule), with the keys it accepts in declaration order.
pub fn tables() -> [(&'static str, &'static [&'static str]); 7] {
    [
        ("", fields::<RawFile>()),
        ("fabric", fields::<RawFabric>()),
        ("chpid", fields::<RawChpid>()),
        ("lpar", fields::<RawLpar>()),
        ("lpar.nic", fields::<RawNic>()),
        ("security_group", fields::<RawSecurityGroup>()),
        ("security_group.rules", fields::<RawRule>()),
    ]
}

/// The field names a derived `Deserialize` passes to `deserialize_struct`.
fn fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // Always an error: the deserializer stops as soon as it has the names.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field list of the struct asked of it.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Fabric;

    #[test]
    fn every_table_has_its_keys() {
        assert_eq!(keys_of(""), ["fabric", "chpid", "lpar", "security_group"]);
        assert_eq!(keys_of("fabric"), ["name", "max_nics_per_lpar", "datapath"]);
        assert_eq!(
            keys_of("lpar"),
            ["name", "netns", "profile", "bandwidth", "traceable", "nic"]
        );
        // Serde's names: `type`, not the field `icmp_type`.
        assert!(keys_of("security_group.rules").contains(&"type"));
        assert!(tables().iter().all(|(_, keys)| !keys.is_empty()));
    }

    #[test]
    fn the_unknown_key_error_names_the_same_keys() {
        let text = "[fabric]\nname = \"f\"\nzzz = 1\n\n[[chpid]]\nid = \"F0\"\n";
        let err = Fabric::parse(text, Path::new("f.toml"))
            .unwrap_err()
            .to_string();
        let expected = keys_of("fabric")
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            err.contains(&format!("expected one of {expected}")),
            "{err}"
        );
    }

    fn keys_of(path: &str) -> &'static [&'static str] {
        tables().into_iter().find(|(p, _)| *p == path).unwrap().1
    }
}
