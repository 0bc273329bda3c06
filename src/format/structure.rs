//! The `structure` tree of a header (docs/FORMAT.md, "Structure"), walked straight from
//! its JSON text without building a document tree: [`walk`] checks every rule (leaf
//! indices used once and in range, unique dict keys, at most [`MAX_DEPTH`] levels and
//! [`MAX_NODES`] containers) and hands each node to a [`Builder`], which validation
//! ([`validate`]) and the Python bindings (which build the nested dicts, lists and tuples
//! around the decoded arrays) implement.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// Deepest nesting of the structure tree (containers within containers).
pub const MAX_DEPTH: usize = 64;
/// Most containers (dicts, lists, tuples) one structure may hold.
pub const MAX_NODES: usize = 1 << 20;

/// What [`walk`] builds from the tree, bottom up.
pub trait Builder {
    /// What one node becomes.
    type Node;
    /// The tensor at index `i` (already checked: in range, used once).
    fn leaf(&mut self, i: usize) -> std::result::Result<Self::Node, String>;
    /// A list (or tuple) of nodes.
    fn seq(
        &mut self,
        items: Vec<Self::Node>,
        tuple: bool,
    ) -> std::result::Result<Self::Node, String>;
    /// A mapping (keys already checked to be unique).
    fn dict(
        &mut self,
        items: Vec<(Cow<'_, str>, Self::Node)>,
    ) -> std::result::Result<Self::Node, String>;
}

/// Walk the structure `json` over `count` tensors into `builder`.
pub fn walk<B: Builder>(json: &str, count: usize, builder: &mut B) -> Result<B::Node> {
    let mut state = State {
        builder,
        seen: vec![false; count],
        nodes: 0,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    // The tree's own depth limit below applies; serde_json's (128) would cut legal
    // trees (a dict level is three JSON levels).
    de.disable_recursion_limit();
    let node = Node {
        state: &mut state,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|n| de.end().map(|()| n))
    .map_err(|e| Error::format(format!("structure is not valid: {e}")))?;
    if let Some(i) = state.seen.iter().position(|s| !s) {
        return Err(Error::format(format!(
            "structure does not place tensor {i}"
        )));
    }
    Ok(node)
}

/// Check that `json` is a valid structure over `count` tensors.
pub fn validate(json: &str, count: usize) -> Result<()> {
    struct Check;
    impl Builder for Check {
        type Node = ();
        fn leaf(&mut self, _: usize) -> std::result::Result<(), String> {
            Ok(())
        }
        fn seq(&mut self, _: Vec<()>, _: bool) -> std::result::Result<(), String> {
            Ok(())
        }
        fn dict(&mut self, _: Vec<(Cow<'_, str>, ())>) -> std::result::Result<(), String> {
            Ok(())
        }
    }
    walk(json, count, &mut Check)
}

struct State<'b, B> {
    builder: &'b mut B,
    seen: Vec<bool>,
    nodes: usize,
}

struct Node<'s, 'b, B> {
    state: &'s mut State<'b, B>,
    depth: usize,
}

impl<'de, B: Builder> DeserializeSeed<'de> for Node<'_, '_, B> {
    type Value = B::Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<B::Node, D::Error> {
        d.deserialize_any(self)
    }
}

const NODE: &str = "a tensor index or an object {\"dict\"|\"list\"|\"tuple\": [...]}";

impl<'de, B: Builder> Visitor<'de> for Node<'_, '_, B> {
    type Value = B::Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(NODE)
    }

    fn visit_u64<E: de::Error>(self, i: u64) -> std::result::Result<B::Node, E> {
        let n = self.state.seen.len();
        let i = usize::try_from(i).ok().filter(|&i| i < n).ok_or_else(|| {
            E::custom(format!(
                "structure leaf {i} is not a tensor index below {n}"
            ))
        })?;
        if std::mem::replace(&mut self.state.seen[i], true) {
            return Err(E::custom(format!(
                "structure uses tensor {i} more than once"
            )));
        }
        self.state.builder.leaf(i).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> std::result::Result<B::Node, E> {
        Err(E::custom(format!(
            "structure leaf {i} is not a tensor index below {}",
            self.state.seen.len()
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<B::Node, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "structure nests deeper than {MAX_DEPTH} levels"
            )));
        }
        self.state.nodes += 1;
        if self.state.nodes > MAX_NODES {
            return Err(de::Error::custom(format!(
                "structure holds more than {MAX_NODES} containers"
            )));
        }
        let Some(Key(kind)) = map.next_key::<Key<'de>>()? else {
            return Err(de::Error::custom(format!("structure node must be {NODE}")));
        };
        let items = Items {
            state: &mut *self.state,
            depth: self.depth + 1,
            dict: kind == "dict",
        };
        let node = match kind.as_ref() {
            "dict" | "list" | "tuple" => map.next_value_seed(items)?,
            other => {
                return Err(de::Error::custom(format!(
                    "unknown structure node {other:?} (expected dict, list or tuple)"
                )))
            }
        };
        if map.next_key::<Key<'de>>()?.is_some() {
            return Err(de::Error::custom(format!(
                "structure node must be {NODE}, with one key"
            )));
        }
        let built = match node {
            Built::Seq(items) => self.state.builder.seq(items, kind == "tuple"),
            Built::Dict(items) => self.state.builder.dict(items),
        };
        built.map_err(de::Error::custom)
    }
}

/// A string that borrows from the JSON text when it holds no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

enum Built<'de, N> {
    Seq(Vec<N>),
    Dict(Vec<(Cow<'de, str>, N)>),
}

/// The array of a container's children (for a dict: `[key, node]` pairs).
struct Items<'s, 'b, B> {
    state: &'s mut State<'b, B>,
    depth: usize,
    dict: bool,
}

impl<'de, B: Builder> DeserializeSeed<'de> for Items<'_, '_, B> {
    type Value = Built<'de, B::Node>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, B: Builder> Visitor<'de> for Items<'_, '_, B> {
    type Value = Built<'de, B::Node>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a structure node's array of children")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        if !self.dict {
            let mut items = Vec::new();
            while let Some(n) = seq.next_element_seed(Node {
                state: &mut *self.state,
                depth: self.depth,
            })? {
                items.push(n);
            }
            return Ok(Built::Seq(items));
        }
        let mut items = Vec::new();
        let mut keys = HashSet::new();
        while let Some(pair) = seq.next_element_seed(Pair {
            state: &mut *self.state,
            depth: self.depth,
            keys: &mut keys,
        })? {
            items.push(pair);
        }
        Ok(Built::Dict(items))
    }
}

/// One `[key, node]` item of a dict, whose key must not be among `keys` (the dict's
/// keys so far; checked before the node is walked).
struct Pair<'s, 'b, 'k, 'de, B> {
    state: &'s mut State<'b, B>,
    depth: usize,
    keys: &'k mut HashSet<Cow<'de, str>>,
}

impl<'de, B: Builder> DeserializeSeed<'de> for Pair<'_, '_, '_, 'de, B> {
    type Value = (Cow<'de, str>, B::Node);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, B: Builder> Visitor<'de> for Pair<'_, '_, '_, 'de, B> {
    type Value = (Cow<'de, str>, B::Node);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("structure dict items must be [key, node] with a string key")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let bad =
            || de::Error::custom("structure dict items must be [key, node] with a string key");
        let Key(key) = seq
            .next_element::<Key<'de>>()
            .map_err(|_| bad())?
            .ok_or_else(bad)?;
        if !self.keys.insert(key.clone()) {
            return Err(de::Error::custom(format!(
                "structure dict has the key {key:?} twice"
            )));
        }
        let node = seq
            .next_element_seed(Node {
                state: self.state,
                depth: self.depth,
            })?
            .ok_or_else(bad)?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(bad());
        }
        Ok((key, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_rules() {
        validate(r#"{"dict":[["a",0],["b",{"list":[1,2]}]]}"#, 3).unwrap();
        validate(r#"{"tuple":[]}"#, 0).unwrap();
        for (bad, why) in [
            (r#"{"dict":[["a",0],["a",1]]}"#, "twice"),
            (r#"{"list":[0,0]}"#, "more than once"),
            (r#"{"list":[0]}"#, "does not place tensor 1"),
            (r#"{"list":[5,1]}"#, "not a tensor index"),
            (r#"{"set":[0,1]}"#, "unknown structure node"),
            (r#"{"dict":[[1,0],["b",1]]}"#, "[key, node]"),
            (r#"{"dict":[["a",0,1],["b",1]]}"#, "[key, node]"),
            (r#"{"list":[0],"tuple":[1]}"#, "one key"),
            (r#"{"list":[0,1.5]}"#, ""),
            (r#"-1"#, "not a tensor index"),
            (r#"{"list":[0,1]} 7"#, "trailing"),
        ] {
            let err = validate(bad, 2).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    fn nested(kind: &str, levels: usize) -> String {
        let mut s = "0".to_string();
        for _ in 0..levels {
            s = match kind {
                "dict" => format!(r#"{{"dict":[["k",{s}]]}}"#),
                _ => format!(r#"{{"{kind}":[{s}]}}"#),
            };
        }
        s
    }

    #[test]
    fn sixty_four_levels_of_any_container_are_legal_sixty_five_are_not() {
        for kind in ["dict", "list", "tuple"] {
            validate(&nested(kind, MAX_DEPTH), 1).unwrap();
            let err = validate(&nested(kind, MAX_DEPTH + 1), 1).unwrap_err();
            assert!(err.to_string().contains("deeper than 64"), "{kind}: {err}");
        }
        // Far deeper nesting is refused at its 65th level, without recursing further.
        let deep = "{\"list\":[".repeat(100_000) + "0" + &"]}".repeat(100_000);
        assert!(validate(&deep, 1).is_err());
    }

    #[test]
    fn container_count_is_bounded() {
        let many = format!(r#"{{"list":[0{}]}}"#, r#",{"list":[]}"#.repeat(MAX_NODES));
        let err = validate(&many, 1).unwrap_err();
        assert!(err.to_string().contains("containers"), "{err}");
        let fine = format!(
            r#"{{"list":[0{}]}}"#,
            r#",{"list":[]}"#.repeat(MAX_NODES - 1)
        );
        validate(&fine, 1).unwrap();
    }
}
