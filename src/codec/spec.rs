//! The stage table: every stage a codec spec can name, in slot order, with how its
//! arguments are parsed and spelled. Parsing, the canonical spelling (`Display`), the
//! error that lists the known stages and the slot order all read [`STAGES`]; `auto`'s
//! candidates are [`AUTO_CANDIDATES`].

use std::fmt;

use super::base::Base;
use super::blockwise::{Blockwise, Code};
use super::compressor::Compressor;
use super::layout::Layout;
use super::quantizer::Quantizer;
use super::sparse::Sparse;
use super::DEFAULT_ZSTD_LEVEL;
use crate::error::{Error, Result};

/// The slots of a pipeline, in the order their stages must appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Slot {
    /// `auto`: the whole spec, resolved before encoding.
    Auto,
    /// A delta against a base tensor.
    Base,
    /// Drop entries.
    Sparse,
    /// Narrow the values.
    Quantizer,
    /// Rearrange the values' bytes.
    Layout,
    /// Compress the block's bytes.
    Compressor,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Auto => "auto",
            Slot::Base => "base",
            Slot::Sparse => "sparse",
            Slot::Quantizer => "quantizer",
            Slot::Layout => "layout",
            Slot::Compressor => "compressor",
        }
    }
}

/// One parsed stage of a spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Stage {
    /// Pick the best lossless pipeline per tensor.
    Auto,
    /// Slot 1.
    Base(Base),
    /// Slot 2.
    Sparse(Sparse),
    /// Slot 3.
    Quantizer(Quantizer),
    /// Slot 4.
    Layout(Layout),
    /// Slot 5.
    Compressor(Compressor),
}

impl Stage {
    /// The slot this stage fills.
    pub(super) fn slot(&self) -> Slot {
        match self {
            Stage::Auto => Slot::Auto,
            Stage::Base(_) => Slot::Base,
            Stage::Sparse(_) => Slot::Sparse,
            Stage::Quantizer(_) => Slot::Quantizer,
            Stage::Layout(_) => Slot::Layout,
            Stage::Compressor(_) => Slot::Compressor,
        }
    }
}

/// A stage a spec can name.
pub(super) struct Row {
    /// The name in a spec (before any `:` argument).
    pub name: &'static str,
    /// The slot its stages fill.
    pub slot: Slot,
    /// Build the stage from its `:`-separated arguments.
    pub parse: fn(&[&str]) -> Result<Stage>,
    /// The canonical spelling of `stage`'s arguments (with their leading `:`), or `None`
    /// when `stage` is not this row's.
    pub spell: fn(&Stage) -> Option<String>,
}

/// Every stage, in slot order. Adding a stage is one row here plus its variant in the
/// file of its slot (base.rs, sparse.rs, quantizer.rs, layout.rs or compressor.rs).
pub(super) static STAGES: &[Row] = &[
    Row {
        name: "auto",
        slot: Slot::Auto,
        parse: |a| no_arg("auto", a, Stage::Auto),
        spell: |s| matches!(s, Stage::Auto).then(String::new),
    },
    Row {
        name: "delta",
        slot: Slot::Base,
        parse: |a| no_arg("delta", a, Stage::Base(Base::Delta)),
        spell: |s| matches!(s, Stage::Base(Base::Delta)).then(String::new),
    },
    Row {
        name: "xor",
        slot: Slot::Base,
        parse: |a| no_arg("xor", a, Stage::Base(Base::Xor)),
        spell: |s| matches!(s, Stage::Base(Base::Xor)).then(String::new),
    },
    Row {
        name: "topk",
        slot: Slot::Sparse,
        parse: |a| {
            let f = one_number("topk", a, "a fraction in (0, 1]")?;
            if f <= 0.0 || f > 1.0 {
                return Err(Error::codec(format!(
                    "topk fraction must be in (0, 1], got {f}"
                )));
            }
            Ok(Stage::Sparse(Sparse::TopK(f)))
        },
        spell: |s| match s {
            Stage::Sparse(Sparse::TopK(f)) => Some(format!(":{f:?}")),
            _ => None,
        },
    },
    Row {
        name: "threshold",
        slot: Slot::Sparse,
        parse: |a| {
            let v = one_number("threshold", a, "a finite magnitude >= 0")?;
            if v < 0.0 {
                return Err(Error::codec(format!(
                    "threshold must be a magnitude >= 0, got {v}"
                )));
            }
            Ok(Stage::Sparse(Sparse::Threshold(v + 0.0)))
        },
        spell: |s| match s {
            Stage::Sparse(Sparse::Threshold(v)) => Some(format!(":{v:?}")),
            _ => None,
        },
    },
    Row {
        name: "f16",
        slot: Slot::Quantizer,
        parse: |a| no_arg("f16", a, Stage::Quantizer(Quantizer::F16)),
        spell: |s| matches!(s, Stage::Quantizer(Quantizer::F16)).then(String::new),
    },
    Row {
        name: "bf16",
        slot: Slot::Quantizer,
        parse: |a| no_arg("bf16", a, Stage::Quantizer(Quantizer::BF16)),
        spell: |s| matches!(s, Stage::Quantizer(Quantizer::BF16)).then(String::new),
    },
    Row {
        name: "int8",
        slot: Slot::Quantizer,
        parse: parse_int8,
        spell: |s| match s {
            Stage::Quantizer(Quantizer::Block(b)) if b.code == Code::Int8 => Some(b.spell()),
            Stage::Quantizer(Quantizer::Int8 {
                per_channel,
                stochastic_seed,
            }) => {
                let mut args = String::new();
                if *per_channel {
                    args.push_str(":channel");
                }
                if let Some(seed) = stochastic_seed {
                    args.push_str(&format!(":stochastic={seed}"));
                }
                Some(args)
            }
            _ => None,
        },
    },
    Row {
        name: "int4",
        slot: Slot::Quantizer,
        parse: |a| Blockwise::parse(Code::Int4, a).map(|b| Stage::Quantizer(Quantizer::Block(b))),
        spell: |s| match s {
            Stage::Quantizer(Quantizer::Block(b)) if b.code == Code::Int4 => Some(b.spell()),
            _ => None,
        },
    },
    Row {
        name: "nf4",
        slot: Slot::Quantizer,
        parse: |a| Blockwise::parse(Code::Nf4, a).map(|b| Stage::Quantizer(Quantizer::Block(b))),
        spell: |s| match s {
            Stage::Quantizer(Quantizer::Block(b)) if b.code == Code::Nf4 => Some(b.spell()),
            _ => None,
        },
    },
    Row {
        name: "shuffle",
        slot: Slot::Layout,
        parse: |a| no_arg("shuffle", a, Stage::Layout(Layout::Shuffle)),
        spell: |s| matches!(s, Stage::Layout(Layout::Shuffle)).then(String::new),
    },
    Row {
        name: "floatzip",
        slot: Slot::Layout,
        parse: |a| no_arg("floatzip", a, Stage::Layout(Layout::FloatZip)),
        spell: |s| matches!(s, Stage::Layout(Layout::FloatZip)).then(String::new),
    },
    Row {
        name: "zstd",
        slot: Slot::Compressor,
        parse: |a| {
            let level = match a {
                [] => DEFAULT_ZSTD_LEVEL,
                [l] => l
                    .parse::<i32>()
                    .ok()
                    .filter(|l| (-7..=22).contains(l) && *l != 0)
                    .ok_or_else(|| {
                        Error::codec(format!(
                            "zstd level must be an integer in -7..=22 other than 0, got {l:?}"
                        ))
                    })?,
                _ => return Err(Error::codec("zstd takes at most one argument, the level")),
            };
            Ok(Stage::Compressor(Compressor::Zstd(level)))
        },
        spell: |s| match s {
            Stage::Compressor(Compressor::Zstd(level)) => Some(format!(":{level}")),
            _ => None,
        },
    },
    Row {
        name: "lz4",
        slot: Slot::Compressor,
        parse: |a| no_arg("lz4", a, Stage::Compressor(Compressor::Lz4)),
        spell: |s| matches!(s, Stage::Compressor(Compressor::Lz4)).then(String::new),
    },
];

/// The pipelines `auto` tries, in order of preference on a tie; those that do not fit
/// a tensor's dtype (and layouts that do nothing to one-byte values) are skipped.
pub(super) const AUTO_CANDIDATES: [&str; 3] = ["floatzip", "shuffle+zstd:3", "zstd:3"];

fn no_arg(name: &str, args: &[&str], stage: Stage) -> Result<Stage> {
    match args.first() {
        None => Ok(stage),
        Some(a) => Err(Error::codec(format!(
            "codec stage {name:?} takes no argument (got {a:?})"
        ))),
    }
}

fn one_number(name: &str, args: &[&str], what: &str) -> Result<f64> {
    match args {
        [a] => a
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| Error::codec(format!("{name} needs {what}, got {a:?}"))),
        _ => Err(Error::codec(format!(
            "{name} needs exactly one argument: {what} (e.g. \"{name}:0.01\")"
        ))),
    }
}

fn parse_int8(args: &[&str]) -> Result<Stage> {
    if args.iter().any(|a| a.starts_with("block=")) {
        return Blockwise::parse(Code::Int8, args).map(|b| Stage::Quantizer(Quantizer::Block(b)));
    }
    let mut per_channel = false;
    let mut stochastic_seed = None;
    for a in args {
        if *a == "channel" && !per_channel {
            per_channel = true;
        } else if let (Some(seed), None) = (a.strip_prefix("stochastic="), stochastic_seed) {
            stochastic_seed = Some(seed.parse::<u64>().map_err(|_| {
                Error::codec(format!(
                    "int8 stochastic seed must be an integer in 0..2^64, got {seed:?}"
                ))
            })?);
        } else {
            return Err(Error::codec(format!(
                "int8 options are \"channel\" and \"stochastic=SEED\", each at most once, \
                 or \"block=N\" alone; got {a:?}"
            )));
        }
    }
    Ok(Stage::Quantizer(Quantizer::Int8 {
        per_channel,
        stochastic_seed,
    }))
}

/// Parse one stage token such as `"zstd:3"` or `"int8:channel"`.
pub(super) fn parse_stage(token: &str) -> Result<Stage> {
    let mut parts = token.split(':');
    let name = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    match STAGES.iter().find(|row| row.name == name) {
        Some(row) => (row.parse)(&args),
        None => {
            let known: Vec<&str> = STAGES.iter().map(|row| row.name).collect();
            Err(Error::codec(format!(
                "unknown codec stage {name:?} (known: {})",
                known.join(", ")
            )))
        }
    }
}

/// The slots after `auto` with their stages, as error messages list them:
/// `"base (delta, xor) + sparse (topk, threshold) + ..."`.
pub(super) fn slot_order() -> String {
    let mut slots: Vec<(Slot, Vec<&str>)> = Vec::new();
    for row in STAGES.iter().filter(|row| row.slot != Slot::Auto) {
        match slots.last_mut() {
            Some((slot, names)) if *slot == row.slot => names.push(row.name),
            _ => slots.push((row.slot, vec![row.name])),
        }
    }
    let described: Vec<String> = slots
        .iter()
        .map(|(slot, names)| format!("{} ({})", slot.name(), names.join(", ")))
        .collect();
    described.join(" + ")
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for row in STAGES {
            if let Some(args) = (row.spell)(self) {
                f.write_str(row.name)?;
                return f.write_str(&args);
            }
        }
        unreachable!("every stage has a row in STAGES")
    }
}

/// Each slot's stages display as the stage they are.
macro_rules! display_as_stage {
    ($($family:ident),*) => {$(
        impl fmt::Display for $family {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                Stage::$family(*self).fmt(f)
            }
        }
    )*};
}
display_as_stage!(Base, Sparse, Quantizer, Layout, Compressor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_parses_and_spells_its_own_stages() {
        let examples = [
            "auto",
            "delta",
            "xor",
            "topk:0.5",
            "threshold:0.25",
            "f16",
            "bf16",
            "int8:channel:stochastic=3",
            "int4:block=64",
            "nf4:block=128",
            "shuffle",
            "floatzip",
            "zstd:7",
            "lz4",
        ];
        assert_eq!(examples.len(), STAGES.len());
        for (row, token) in STAGES.iter().zip(examples) {
            let stage = parse_stage(token).unwrap();
            assert_eq!(stage.slot(), row.slot, "{token}");
            assert_eq!(stage.to_string(), token);
            let others = STAGES.iter().filter(|r| r.name != row.name);
            assert!(
                others.into_iter().all(|r| (r.spell)(&stage).is_none()),
                "{token}"
            );
        }
        let mut slots: Vec<Slot> = STAGES.iter().map(|r| r.slot).collect();
        slots.dedup();
        assert!(
            slots.windows(2).all(|w| w[0] < w[1]),
            "rows are in slot order"
        );
        let e = parse_stage("gzip").unwrap_err().to_string();
        assert!(e.contains("known: auto, delta, xor, topk"), "{e}");
        assert!(slot_order().starts_with("base (delta, xor) + sparse (topk, threshold)"));
    }
}
